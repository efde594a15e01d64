#!/usr/bin/env node
// A third-party OCPP 2.0.1 charging station built on ocpp-rpc in strict mode: every CALL it
// sends or receives and every CALLRESULT is validated against ocpp-rpc's own copy of the
// official JSON schemas.  Used by tests/interop/test_ocpp_rpc_station.py against Chargeward's
// CSMS.
//
//   node station.js --url ws://127.0.0.1:9000/ocpp/ --id CP-1 --password secret \
//       [--ca ca.pem] [--model AC22] [--firmware 1.0.0] [--new-firmware 1.1.0] \
//       [--update-answer Accepted|Rejected]
//
// It boots (BootNotification PowerUp), reports its connector (StatusNotification) and sends a
// Heartbeat.  On UpdateFirmware it answers --update-answer; when Accepted it downloads the
// image with a plain HTTP(S) GET, reports Downloading, Downloaded, then SignatureVerified when
// the request carries a signature and a signing certificate (this station cannot verify a
// Chargeward CWFW image: it only checks that both are present), Installing, InstallRebooting,
// reconnects with BootNotification reason FirmwareUpdate and --new-firmware, and reports
// Installed.
//
// Commands on stdin and events on stdout: see station_common.js.
'use strict';

const { Station, parseArgs, emit, summary, download, run } = require('./station_common');

const opts = parseArgs(process.argv.slice(2), {
    model: 'AC22',
    firmware: '1.0.0',
    'new-firmware': '1.1.0',
    'update-answer': 'Accepted',
});
const station = new Station(opts, 'ocpp2.0.1');
let firmwareVersion = opts.firmware;

async function boot(reason) {
    await station.open((c) => c.handle('UpdateFirmware', ({ params }) => updateFirmware(params)));
    const reply = await station.call('BootNotification', {
        reason,
        chargingStation: {
            model: opts.model,
            vendorName: 'ocpp-rpc interop station',
            firmwareVersion,
            serialNumber: opts.id,
        },
    });
    if (!reply || reply.status !== 'Accepted') throw new Error(`boot not accepted: ${JSON.stringify(reply)}`);
    await station.call('StatusNotification', {
        timestamp: new Date().toISOString(),
        connectorStatus: 'Available',
        evseId: 1,
        connectorId: 1,
    });
    await station.call('Heartbeat', {});
}

function updateFirmware(params) {
    const status = opts['update-answer'];
    emit({ event: 'exchange', dir: 'csms->station', action: 'UpdateFirmware',
        request: { ...params, firmware: summary(params.firmware, ['signature', 'signingCertificate']) },
        result: 'CALLRESULT', reply: { status } });
    if (status === 'Accepted') station.afterAnswer(() => runUpdate(params));
    return { status };
}

async function runUpdate(params) {
    const requestId = params.requestId;
    const report = (status) => station.call('FirmwareStatusNotification', { status, requestId });
    await report('Downloading');
    try {
        const size = await download(params.firmware.location, station.ca);
        emit({ event: 'downloaded', bytes: size });
    } catch (err) {
        emit({ event: 'download-failed', error: err.message });
        await report('DownloadFailed');
        return;
    }
    await report('Downloaded');
    // This station cannot verify a Chargeward image: it checks only that a signature and a
    // signing certificate came with the request (OCPP L01.FR.03/04 leave the method to it).
    if (!params.firmware.signature || !params.firmware.signingCertificate) {
        await report('InvalidSignature');
        return;
    }
    await report('SignatureVerified');
    await report('Installing');
    await report('InstallRebooting');
    await station.close();
    firmwareVersion = opts['new-firmware'];
    await boot('FirmwareUpdate');
    await report('Installed');
    emit({ event: 'update-done', firmwareVersion });
}

run(async () => {
    await boot('PowerUp');
    station.serve();
});
