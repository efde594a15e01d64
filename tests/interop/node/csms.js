#!/usr/bin/env node
// A third-party OCPP 2.0.1 CSMS built on ocpp-rpc in strict mode: every CALL it receives and
// every CALLRESULT it sends or receives is validated against ocpp-rpc's own copy of the
// official JSON schemas.  Used by tests/interop/test_ocpp_rpc_csms.py to drive Chargeward's
// reference agent.
//
//   node csms.js [--port 0] [--password secret] [--interval 300]
//
// It listens on 127.0.0.1 and prints {"event": "listening", "port": N}.  With --password it
// accepts only HTTP Basic auth with that password (security profile 1); --interval is the
// heartbeat interval its BootNotification answers give.
//
// Commands, one JSON object a line on stdin:
//   {"cmd": "call", "ref": "u1", "station": "CP-1", "action": "UpdateFirmware", "params": {...}}
//        -> {"event": "call-result", "ref": "u1", "result": "CALLRESULT"|"CALLERROR", ...}
//   {"cmd": "mode", "action": "BootNotification", "mode": "error", "code": "FormatViolation",
//    "times": 1}       answer the next `times` CALLs of `action` with a CALLERROR
//   {"cmd": "mode", "action": "Heartbeat", "mode": "silent"}   never answer it
//   {"cmd": "mode", "action": "Heartbeat", "mode": "normal"}
//   {"cmd": "disconnect", "station": "CP-1"}   close the station's connection
//
// Output: one JSON object a line on stdout: every CALL received with its answer
// ({"event": "exchange", "dir": "station->csms", ...}), every connection and disconnection,
// and any strictValidationFailure or badMessage.
'use strict';

const readline = require('readline');
const { RPCServer, createRPCError, NOREPLY } = require('ocpp-rpc');

function args(argv) {
    const out = {};
    for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
    return out;
}

const opts = { port: '0', interval: '300', ...args(process.argv.slice(2)) };
const stations = new Map(); // identity -> its current RPCServerClient
const modes = new Map(); // action -> {mode, code, times}
let connections = 0;

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

const now = () => new Date().toISOString();
const ANSWERS = {
    BootNotification: () => ({ currentTime: now(), interval: Number(opts.interval), status: 'Accepted' }),
    Heartbeat: () => ({ currentTime: now() }),
    StatusNotification: () => ({}),
    FirmwareStatusNotification: () => ({}),
    SecurityEventNotification: () => ({}),
    LogStatusNotification: () => ({}),
    NotifyEvent: () => ({}),
    TransactionEvent: () => ({}),
};

function answer(station, method, params) {
    const mode = modes.get(method) || modes.get('*');
    const record = { event: 'exchange', dir: 'station->csms', station, action: method, request: params };
    if (mode && mode.mode === 'silent') {
        emit({ ...record, result: 'silent' });
        return NOREPLY;
    }
    if (mode && mode.mode === 'error' && mode.times > 0) {
        mode.times -= 1;
        emit({ ...record, result: 'CALLERROR', reply: { code: mode.code } });
        throw createRPCError(mode.code, `refused by the interop CSMS`);
    }
    const make = ANSWERS[method];
    if (!make) {
        emit({ ...record, result: 'CALLERROR', reply: { code: 'NotImplemented' } });
        throw createRPCError('NotImplemented', `${method} is not handled by the interop CSMS`);
    }
    const reply = make(params);
    emit({ ...record, result: 'CALLRESULT', reply });
    return reply;
}

const server = new RPCServer({
    protocols: ['ocpp2.0.1'],
    strictMode: true,
    callTimeoutMs: 20000,
});

server.auth((accept, reject, handshake) => {
    const password = handshake.password ? handshake.password.toString('utf8') : undefined;
    if (opts.password !== undefined && password !== opts.password) {
        emit({ event: 'auth-refused', station: handshake.identity, password: password !== undefined });
        reject(401);
        return;
    }
    accept();
});

server.on('client', (client) => {
    const station = client.identity;
    connections += 1;
    stations.set(station, client);
    emit({ event: 'connected', station, protocol: client.protocol, connection: connections });
    client.on('strictValidationFailure', (e) =>
        emit({
            event: 'strictValidationFailure',
            station,
            action: e.method,
            outbound: e.outbound,
            isCall: e.isCall,
            error: e.error.message,
            params: e.params,
            result: e.result,
        }),
    );
    client.on('badMessage', (e) => emit({ event: 'badMessage', station, frame: e.buffer.toString(), error: e.error.message }));
    client.on('close', (e) => {
        if (stations.get(station) === client) stations.delete(station);
        emit({ event: 'disconnected', station, code: e.code, reason: e.reason });
    });
    client.handle(({ method, params }) => answer(station, method, params));
});

async function command(line) {
    const cmd = JSON.parse(line);
    if (cmd.cmd === 'mode') {
        modes.set(cmd.action, { mode: cmd.mode, code: cmd.code || 'FormatViolation', times: cmd.times ?? Infinity });
        emit({ event: 'mode-set', action: cmd.action, mode: cmd.mode });
    } else if (cmd.cmd === 'call') {
        const client = stations.get(cmd.station);
        const record = { event: 'call-result', dir: 'csms->station', ref: cmd.ref, station: cmd.station, action: cmd.action, request: cmd.params };
        if (!client) {
            emit({ ...record, result: 'not-connected' });
            return;
        }
        // Not awaited in line: the station's CALLs during the request are answered meanwhile.
        client.call(cmd.action, cmd.params).then(
            (reply) => emit({ ...record, result: 'CALLRESULT', reply }),
            (err) => emit({ ...record, result: 'CALLERROR', reply: { code: err.rpcErrorCode || err.name, description: err.message } }),
        );
    } else if (cmd.cmd === 'disconnect') {
        const client = stations.get(cmd.station);
        if (client) await client.close({ code: 1001, reason: 'closed by the interop CSMS', force: true });
    }
}

async function main() {
    const http = await server.listen(Number(opts.port), '127.0.0.1');
    emit({ event: 'listening', port: http.address().port });
    const rl = readline.createInterface({ input: process.stdin });
    let chain = Promise.resolve();
    rl.on('line', (line) => {
        chain = chain.then(() => command(line)).catch((err) => emit({ event: 'fatal', error: String(err) }));
    });
    rl.on('close', () => chain.then(() => server.close({ force: true })).then(() => process.exit(0)));
}

main().catch((err) => {
    emit({ event: 'fatal', error: String(err && err.stack || err) });
    process.exit(1);
});
