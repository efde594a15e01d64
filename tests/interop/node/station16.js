#!/usr/bin/env node
// A third-party OCPP 1.6J charging station built on ocpp-rpc in strict mode: every CALL it
// sends or receives and every CALLRESULT is validated against ocpp-rpc's own copy of the
// OCPP 1.6 JSON schemas, which include the Security Whitepaper's messages (SignedUpdateFirmware,
// SignedFirmwareStatusNotification, SecurityEventNotification, ExtendedTriggerMessage, ...).
// Used by tests/interop/test_ocpp_rpc_station16.py against Chargeward's CSMS.
//
//   node station16.js --url ws://127.0.0.1:9000/ocpp/ --id CP-1 --password secret \
//       [--ca ca.pem] [--model AC22] [--firmware 1.0.0] [--new-firmware 1.1.0] \
//       [--kind whitepaper|legacy] [--update-answer Accepted|Rejected]
//
// It boots (BootNotification), reports its connector (StatusNotification) and sends a
// Heartbeat.
//
// --kind whitepaper (the default) handles SignedUpdateFirmware: it answers --update-answer;
// when Accepted it downloads the image with a plain HTTP(S) GET and reports
// SignedFirmwareStatusNotification (with the requestId) Downloading, Downloaded,
// SignatureVerified (it only checks that a signature and a signing certificate came: it cannot
// verify a Chargeward CWFW image), Installing, InstallRebooting, reconnects with --new-firmware
// in BootNotification and reports Installed.
//
// --kind legacy has no Security Whitepaper: SignedUpdateFirmware gets ocpp-rpc's CALLERROR
// NotImplemented (after strict mode validated it); plain UpdateFirmware is answered, the
// image downloaded, FirmwareStatusNotification Downloading, Downloaded, Installing reported,
// the station reconnects with --new-firmware and reports Installed.
//
// Commands on stdin and events on stdout: see station_common.js.
'use strict';

const { Station, parseArgs, emit, summary, download, run } = require('./station_common');

const opts = parseArgs(process.argv.slice(2), {
    model: 'AC22',
    firmware: '1.0.0',
    'new-firmware': '1.1.0',
    kind: 'whitepaper',
    'update-answer': 'Accepted',
});
if (!['whitepaper', 'legacy'].includes(opts.kind)) throw new Error(`unknown --kind ${opts.kind}`);
const station = new Station(opts, 'ocpp1.6');
let firmwareVersion = opts.firmware;

function handlers(c) {
    if (opts.kind === 'whitepaper') {
        c.handle('SignedUpdateFirmware', ({ params }) => signedUpdateFirmware(params));
    } else {
        c.handle('UpdateFirmware', ({ params }) => updateFirmware(params));
    }
}

async function boot() {
    await station.open(handlers);
    const reply = await station.call('BootNotification', {
        chargePointVendor: 'ocpp-rpc interop',
        chargePointModel: opts.model,
        chargePointSerialNumber: opts.id,
        firmwareVersion,
    });
    if (!reply || reply.status !== 'Accepted') throw new Error(`boot not accepted: ${JSON.stringify(reply)}`);
    await station.call('StatusNotification', {
        connectorId: 1,
        errorCode: 'NoError',
        status: 'Available',
        timestamp: new Date().toISOString(),
    });
    await station.call('Heartbeat', {});
}

async function reboot() {
    await station.close();
    firmwareVersion = opts['new-firmware'];
    await boot();
}

// Whitepaper L01 (Signed Firmware Update).
function signedUpdateFirmware(params) {
    const status = opts['update-answer'];
    emit({ event: 'exchange', dir: 'csms->station', action: 'SignedUpdateFirmware',
        request: { ...params, firmware: summary(params.firmware, ['signature', 'signingCertificate']) },
        result: 'CALLRESULT', reply: { status } });
    if (status === 'Accepted') station.afterAnswer(() => runSignedUpdate(params));
    return { status };
}

async function runSignedUpdate(params) {
    const requestId = params.requestId;
    const report = (status) => station.call('SignedFirmwareStatusNotification', { status, requestId });
    await report('Downloading');
    if (!await fetched(params.firmware.location)) {
        await report('DownloadFailed');
        return;
    }
    await report('Downloaded');
    if (!params.firmware.signature || !params.firmware.signingCertificate) {
        await report('InvalidSignature');
        return;
    }
    await report('SignatureVerified');
    await report('Installing');
    await report('InstallRebooting');
    await reboot();
    await report('Installed');
    emit({ event: 'update-done', firmwareVersion });
}

// OCPP 1.6 section 6.62 UpdateFirmware: no status in the answer, none in the notifications.
function updateFirmware(params) {
    emit({ event: 'exchange', dir: 'csms->station', action: 'UpdateFirmware', request: params,
        result: 'CALLRESULT', reply: {} });
    station.afterAnswer(() => runUpdate(params));
    return {};
}

async function runUpdate(params) {
    const report = (status) => station.call('FirmwareStatusNotification', { status });
    await report('Downloading');
    if (!await fetched(params.location)) {
        await report('DownloadFailed');
        return;
    }
    await report('Downloaded');
    await report('Installing');
    await reboot();
    await report('Installed');
    emit({ event: 'update-done', firmwareVersion });
}

async function fetched(location) {
    try {
        emit({ event: 'downloaded', bytes: await download(location, station.ca) });
        return true;
    } catch (err) {
        emit({ event: 'download-failed', error: err.message });
        return false;
    }
}

run(async () => {
    await boot();
    station.serve();
});
