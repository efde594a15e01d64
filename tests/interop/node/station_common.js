// What the ocpp-rpc stations share: station.js (OCPP 2.0.1) and station16.js (OCPP 1.6J).
// Both speak the same JSON-lines protocol with tests/interop/node_peer.py:
//
//   const { Station, parseArgs } = require('./station_common');
//   const station = new Station(parseArgs(process.argv.slice(2), defaults), 'ocpp1.6');
//   await station.open((client) => client.handle('UpdateFirmware', ...));
//   await station.call('Heartbeat', {});
//   station.serve();                          // read commands from stdin
//
// Commands, one JSON object a line on stdin:
//   {"cmd": "heartbeat"}                     a Heartbeat
//   {"cmd": "call", "action": "...", "params": {...}}  any CALL, through strict mode
//   {"cmd": "raw", "ref": "r1", "frame": [...]}  a frame strict mode would refuse to send
//                                            (an unknown action, a malformed payload); the
//                                            answer is reported as {"event": "raw-reply"}
//   {"cmd": "quit"}
//
// Output: one JSON object a line on stdout, e.g.
//   {"event": "exchange", "dir": "station->csms", "action": "BootNotification",
//    "request": {...}, "result": "CALLRESULT", "reply": {...}}
// and every strictValidationFailure or badMessage ocpp-rpc reports.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const readline = require('readline');
const { RPCClient, createRPCError } = require('ocpp-rpc');

function parseArgs(argv, defaults) {
    const out = { ...defaults };
    for (let i = 0; i < argv.length; i += 2) {
        if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}`);
        out[argv[i].slice(2)] = argv[i + 1];
    }
    return out;
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function errorOf(err) {
    return { code: err.rpcErrorCode || err.name, description: err.message };
}

// ``obj`` with the long strings under ``keys`` replaced by their length (for the log).
function summary(obj, keys) {
    const out = { ...obj };
    for (const key of keys) {
        if (typeof out[key] === 'string') out[key] = `<${out[key].length} chars>`;
    }
    return out;
}

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

// A plain HTTP(S) GET of ``location``; resolves to the number of bytes read.
function download(location, ca) {
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

class Station {
    // ``opts``: url, id, password, ca (a file); ``protocol``: the one subprotocol offered.
    constructor(opts, protocol) {
        this.opts = opts;
        this.protocol = protocol;
        this.ca = opts.ca ? fs.readFileSync(opts.ca) : undefined;
        this.client = null;
        this.rawRefs = new Map(); // message id of a raw frame -> its ref
        this.updating = Promise.resolve();
    }

    // Connect; ``install(client)`` registers the station's handlers.  Every other CALL is
    // answered NotImplemented, after strict mode has validated it.
    async open(install) {
        const c = new RPCClient({
            endpoint: this.opts.url.replace(/\/$/, ''),
            identity: this.opts.id,
            password: this.opts.password,
            protocols: [this.protocol],
            strictMode: true,
            reconnect: false,
            callTimeoutMs: 20000,
            wsOpts: this.ca ? { ca: this.ca, minVersion: 'TLSv1.2' } : {},
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
            if (Array.isArray(frame) && this.rawRefs.has(frame[1])) {
                const ref = this.rawRefs.get(frame[1]);
                this.rawRefs.delete(frame[1]);
                emit({ event: 'raw-reply', ref, frame, ...checkReply(frame) });
                return;
            }
            emit({ event: 'badMessage', frame: e.buffer.toString(), error: e.error.message });
        });
        c.on('close', (e) => emit({ event: 'closed', code: e.code, reason: e.reason }));
        install(c);
        c.handle(({ method, params }) => {
            emit({ event: 'exchange', dir: 'csms->station', action: method, request: params,
                result: 'CALLERROR', reply: { code: 'NotImplemented' } });
            throw createRPCError('NotImplemented', `${method} is not implemented by this station`);
        });
        this.client = c;
        await c.connect();
        emit({ event: 'connected', protocol: c.protocol });
    }

    async close() {
        await this.client.close({ code: 1000, reason: 'rebooting into new firmware' });
    }

    // A CALL from the station, logged with its answer.  Never throws: a CALLERROR is an answer.
    async call(action, request) {
        try {
            const reply = await this.client.call(action, request);
            emit({ event: 'exchange', dir: 'station->csms', action, request, result: 'CALLRESULT', reply });
            return reply;
        } catch (err) {
            emit({ event: 'exchange', dir: 'station->csms', action, request, result: 'CALLERROR', reply: errorOf(err) });
            return null;
        }
    }

    // Run ``fn`` after the answer to the CALL being handled is out (the CALLs of an update
    // follow its CALLRESULT); ``quit`` waits for it.
    afterAnswer(fn) {
        this.updating = new Promise((resolve) => setImmediate(resolve)).then(fn);
    }

    async command(line) {
        const cmd = JSON.parse(line);
        if (cmd.cmd === 'heartbeat') {
            await this.call('Heartbeat', {});
        } else if (cmd.cmd === 'call') {
            await this.call(cmd.action, cmd.params);
        } else if (cmd.cmd === 'raw') {
            this.rawRefs.set(cmd.frame[1], cmd.ref);
            emit({ event: 'raw-sent', ref: cmd.ref, frame: cmd.frame });
            this.client.sendRaw(JSON.stringify(cmd.frame));
        } else if (cmd.cmd === 'quit') {
            await this.updating;
            await this.client.close({ code: 1000 });
            process.exit(0);
        }
    }

    // Print ``ready`` and serve the commands on stdin, one at a time.
    serve() {
        emit({ event: 'ready' });
        const rl = readline.createInterface({ input: process.stdin });
        let chain = Promise.resolve();
        rl.on('line', (line) => {
            chain = chain.then(() => this.command(line)).catch((err) => emit({ event: 'fatal', error: String(err) }));
        });
        rl.on('close', () => chain.then(() => process.exit(0)));
    }
}

// Run ``main`` and report a failure as {"event": "fatal"} with exit status 1.
function run(main) {
    main().catch((err) => {
        emit({ event: 'fatal', error: String(err && err.stack || err) });
        process.exit(1);
    });
}

module.exports = { Station, parseArgs, emit, summary, download, run };
