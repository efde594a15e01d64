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
// Commands, one JSON object a line on stdin:
//   {"cmd": "heartbeat"}                     a Heartbeat
//   {"cmd": "raw", "ref": "r1", "frame": [...]}  a frame strict mode would refuse to send
//                                            (an unknown action, a malformed payload); the
//                                            answer is reported as {"event": "raw-reply"}
//   {"cmd": "quit"}
//
// Output: one JSON object a line on stdout, e.g.
//   {"event": "exchange", "dir": "station->csms", "action": "BootNotification",
//    "request": {...}, "result": "CALLRESULT", "reply": {...}}
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const readline = require('readline');
const { RPCClient, createRPCError } = require('ocpp-rpc');

function args(argv) {
    const out = {};
    for (let i = 0; i < argv.length; i += 2) {
        if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}`);
        out[argv[i].slice(2)] = argv[i + 1];
    }
    return out;
}

const opts = {
    model: 'AC22',
    firmware: '1.0.0',
    'new-firmware': '1.1.0',
    'update-answer': 'Accepted',
    ...args(process.argv.slice(2)),
};
const ca = opts.ca ? fs.readFileSync(opts.ca) : undefined;
let firmwareVersion = opts.firmware;
let client = null;

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function errorOf(err) {
    return { code: err.rpcErrorCode || err.name, description: err.message };
}

function connect() {
    const c = new RPCClient({
        endpoint: opts.url.replace(/\/$/, ''),
        identity: opts.id,
        password: opts.password,
        protocols: ['ocpp2.0.1'],
        strictMode: true,
        reconnect: false,
        callTimeoutMs: 20000,
        wsOpts: ca ? { ca, minVersion: 'TLSv1.2' } : {},
    });
    c.on('strictValidationFailure', (e) =>
        emit({
            event: 'strictValidationFailure',
            action: e.method,
            outbound: e.outbound,
            isCall: e.isCall,
            error: e.error.message,
        }),
    );
    c.on('badMessage', (e) => {
        const frame = JSON.parse(e.buffer.toString());
        // The answer to a frame sent with sendRaw has no pending call: ocpp-rpc parses it (a
        // well-formed CALLERROR or CALLRESULT) and then reports it as a bad message.
        if (Array.isArray(frame) && rawRefs.has(frame[1])) {
            const ref = rawRefs.get(frame[1]);
            rawRefs.delete(frame[1]);
            emit({ event: 'raw-reply', ref, frame, ...checkReply(frame) });
            return;
        }
        emit({ event: 'badMessage', frame: e.buffer.toString(), error: e.error.message });
    });
    c.on('close', (e) => emit({ event: 'closed', code: e.code, reason: e.reason }));
    c.handle('UpdateFirmware', ({ params }) => updateFirmware(params));
    c.handle(({ method, params }) => {
        emit({ event: 'exchange', dir: 'csms->station', action: method, request: params,
            result: 'CALLERROR', reply: { code: 'NotImplemented' } });
        throw createRPCError('NotImplemented', `${method} is not implemented by this station`);
    });
    return c;
}

// A CALL from the station, logged with its answer.  Never throws: a CALLERROR is an answer.
async function call(action, request) {
    try {
        const reply = await client.call(action, request);
        emit({ event: 'exchange', dir: 'station->csms', action, request, result: 'CALLRESULT', reply });
        return reply;
    } catch (err) {
        emit({ event: 'exchange', dir: 'station->csms', action, request, result: 'CALLERROR', reply: errorOf(err) });
        return null;
    }
}

async function boot(reason) {
    client = connect();
    await client.connect();
    emit({ event: 'connected', protocol: client.protocol });
    const reply = await call('BootNotification', {
        reason,
        chargingStation: {
            model: opts.model,
            vendorName: 'ocpp-rpc interop station',
            firmwareVersion,
            serialNumber: opts.id,
        },
    });
    if (!reply || reply.status !== 'Accepted') throw new Error(`boot not accepted: ${JSON.stringify(reply)}`);
    await call('StatusNotification', {
        timestamp: new Date().toISOString(),
        connectorStatus: 'Available',
        evseId: 1,
        connectorId: 1,
    });
    await call('Heartbeat', {});
}

function download(location) {
    return new Promise((resolve, reject) => {
        const get = location.startsWith('https:') ? https.get : http.get;
        const req = get(location, { ca, timeout: 20000 }, (res) => {
            if (res.statusCode !== 200) {
                res.resume();
                reject(new Error(`HTTP ${res.statusCode}`));
                return;
            }
            let size = 0;
            res.on('data', (chunk) => { size += chunk.length; });
            res.on('end', () => resolve(size));
            res.on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error('download timed out')));
        req.on('error', reject);
    });
}

let updating = Promise.resolve();

function updateFirmware(params) {
    const status = opts['update-answer'];
    emit({ event: 'exchange', dir: 'csms->station', action: 'UpdateFirmware',
        request: { ...params, firmware: summary(params.firmware) }, result: 'CALLRESULT',
        reply: { status } });
    if (status === 'Accepted') {
        // After the answer is out: the CALLs of the update follow the CALLRESULT.
        updating = new Promise((resolve) => setImmediate(resolve)).then(() => runUpdate(params));
    }
    return { status };
}

function summary(firmware) {
    const out = { ...firmware };
    for (const key of ['signature', 'signingCertificate']) {
        if (typeof out[key] === 'string') out[key] = `<${out[key].length} chars>`;
    }
    return out;
}

async function runUpdate(params) {
    const requestId = params.requestId;
    const report = (status) => call('FirmwareStatusNotification', { status, requestId });
    await report('Downloading');
    try {
        const size = await download(params.firmware.location);
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
    await client.close({ code: 1000, reason: 'rebooting into new firmware' });
    firmwareVersion = opts['new-firmware'];
    await boot('FirmwareUpdate');
    await report('Installed');
    emit({ event: 'update-done', firmwareVersion });
}

const rawRefs = new Map();

// Is ``frame`` a CALLERROR as OCPP-J 4.2.3 has it: [4, id, code, description, details], with a
// code ocpp-rpc knows (its createRPCError maps an unknown code to GenericError)?
function checkReply(frame) {
    const [type, , code, description, details] = frame;
    const wellFormed = type === 4 && frame.length === 5 && typeof code === 'string'
        && typeof description === 'string' && details !== null && typeof details === 'object'
        && !Array.isArray(details);
    const known = type === 4 && createRPCError(code).rpcErrorCode === code;
    return { wellFormed, known };
}

async function command(line) {
    const cmd = JSON.parse(line);
    if (cmd.cmd === 'heartbeat') {
        await call('Heartbeat', {});
    } else if (cmd.cmd === 'raw') {
        rawRefs.set(cmd.frame[1], cmd.ref);
        emit({ event: 'raw-sent', ref: cmd.ref, frame: cmd.frame });
        client.sendRaw(JSON.stringify(cmd.frame));
    } else if (cmd.cmd === 'quit') {
        await updating;
        await client.close({ code: 1000 });
        process.exit(0);
    }
}

async function main() {
    await boot('PowerUp');
    emit({ event: 'ready' });
    const rl = readline.createInterface({ input: process.stdin });
    let chain = Promise.resolve();
    rl.on('line', (line) => {
        chain = chain.then(() => command(line)).catch((err) => emit({ event: 'fatal', error: String(err) }));
    });
    rl.on('close', () => chain.then(() => process.exit(0)));
}

main().catch((err) => {
    emit({ event: 'fatal', error: String(err && err.stack || err) });
    process.exit(1);
});
