// meshgate.js: a browser client for meshgate over WebTransport.
//
// An ES module with no dependencies and no build step: serve this file with your page
// and `import { connect } from "./meshgate.js"`.  It speaks the meshgate protocol
// (docs/protocol.md: every frame one msgpack array, opcode first) on one WebTransport
// bidirectional stream, and receives keyed state as WebTransport datagrams.
//
//   const client = await connect("https://game.example:4433/meshgate", {
//     token: "secret",                       // the node authenticates every client
//     session: localStorage.mgSession,       // secret session key (>= 16 characters)
//     serverCertificateHashes: [{ algorithm: "sha-256", value: hashBytes }], // optional
//   });
//   client.subscribe("world.cell.>", (msg) => draw(msg)); // msg.unreliable: a datagram
//   client.publish("chat.room1", new TextEncoder().encode("hi"));
//   client.sendInput("ship1", inputBytes);   // sequence numbers grow per client
//   await client.close();
//
// What goes where: everything on the reliable stream, in order (inputs, events,
// replies, corrections), except keyed state the node sends as datagrams: MSG frames
// with two trailing fields, a per-(subscription, key) sequence number `kseq` and the
// key.  A datagram (or stream message) whose kseq is not newer than the last one
// delivered for its key is dropped (client.staleDropped counts them): state never goes
// back in time.  A lost update is repaired by the next one (and the node sends every
// Nth update of a key on the stream).
//
// The Python client (meshgate.connect) is the reference; this one implements the part
// a browser game needs: HELLO with token and session, SUB/UNSUB, PUB (with a key for
// coalescable state), inputs ($IN.<entity>, ClientInput [seq, data, relay?]),
// PING/PONG, ERROR and INFO frames, keyed datagrams.  Headers (msgpack extension 1)
// are decoded as {headers: string, body: Uint8Array}.
//
// Also: request/reply (`await client.request(subject, payload, { timeout })`, which
// rejects with NoRespondersError at once when nobody can receive the request) and
// automatic reconnect (on by default): a session that ends without `close()` is
// opened again to the same URL with jittered backoff, with the same token and session
// key; the subscriptions are made again, and the last inputs are sent again (the owner
// applies each sequence number of a session key once).  `onDisconnect()` and
// `onReconnect(attempts)` say when; `client.reconnects` counts.
//
// Not here (yet): publishing with headers, deltas (the node sends this client whole
// values: it does not announce a delta codec).

const OP = { HELLO: 0, PUB: 1, SUB: 2, UNSUB: 3, MSG: 4, PING: 5, PONG: 6, ERROR: 7, INFO: 8 };
const PROTOCOL_VERSION = 1;
const KSEQ_SEEN_MAX = 4096;
/** inputs kept to send again after a reconnect (as the Python client's RECENT_INPUTS) */
export const RECENT_INPUTS = 64;
/** requests waiting for a reply at once, at most (a bound, not a target) */
const MAX_REQUESTS = 1024;

// -- msgpack: the subset the protocol uses ---------------------------------------------

const utf8enc = new TextEncoder();
const utf8dec = new TextDecoder("utf-8", { fatal: true });

/** Encode `value` (null/undefined, boolean, integer, string, Uint8Array, Array, plain
 * object with string keys) as msgpack bytes. */
export function encode(value) {
  const out = [];
  const push8 = (b) => out.push(b & 0xff);
  const pushN = (n, bytes) => {
    for (let i = bytes - 1; i >= 0; i--) push8(Number((BigInt(n) >> BigInt(8 * i)) & 0xffn));
  };
  const head = (fix, fixMax, codes, n) => {
    if (fix !== null && n <= fixMax) push8(fix | n);
    else if (codes[0] !== null && n < 0x100) { push8(codes[0]); pushN(n, 1); }
    else if (n < 0x10000) { push8(codes[1]); pushN(n, 2); }
    else { push8(codes[2]); pushN(n, 4); }
  };
  const enc = (v) => {
    if (v === null || v === undefined) push8(0xc0);
    else if (v === false) push8(0xc2);
    else if (v === true) push8(0xc3);
    else if (typeof v === "number" || typeof v === "bigint") {
      if (typeof v === "number" && !Number.isInteger(v)) throw new TypeError("no floats in the protocol");
      const n = BigInt(v);
      if (n >= 0n) {
        if (n < 0x80n) push8(Number(n));
        else if (n < 0x100n) { push8(0xcc); pushN(n, 1); }
        else if (n < 0x10000n) { push8(0xcd); pushN(n, 2); }
        else if (n < 0x100000000n) { push8(0xce); pushN(n, 4); }
        else { push8(0xcf); pushN(n, 8); }
      } else if (n >= -32n) push8(Number(n) & 0xff);
      else { push8(0xd3); pushN(BigInt.asUintN(64, n), 8); }
    } else if (typeof v === "string") {
      const b = utf8enc.encode(v);
      head(0xa0, 31, [0xd9, 0xda, 0xdb], b.length);
      for (const x of b) out.push(x);
    } else if (v instanceof Uint8Array) {
      head(null, -1, [0xc4, 0xc5, 0xc6], v.length);
      for (const x of v) out.push(x);
    } else if (Array.isArray(v)) {
      head(0x90, 15, [null, 0xdc, 0xdd], v.length);
      v.forEach(enc);
    } else if (typeof v === "object") {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      head(0x80, 15, [null, 0xde, 0xdf], keys.length);
      for (const k of keys) { enc(k); enc(v[k]); }
    } else throw new TypeError(`cannot encode ${typeof v}`);
  };
  enc(value);
  return Uint8Array.from(out);
}

/** Thrown by `decode` when the bytes end before the value does. */
export class Incomplete extends Error {}

/** Decode one msgpack value at `offset` of `bytes`: [value, next offset].  Throws
 * Incomplete when more bytes are needed, Error when the bytes are not msgpack. */
export function decode(bytes, offset = 0) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = offset;
  const need = (n) => { if (p + n > bytes.length) throw new Incomplete(); };
  const u = (n) => {
    need(n);
    let v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(bytes[p + i]);
    p += n;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const raw = (n) => { need(n); const b = bytes.subarray(p, p + n); p += n; return b; };
  const dec = () => {
    need(1);
    const b = bytes[p++];
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x90) return arr(b & 0x0f);
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return utf8dec.decode(raw(b & 0x1f));
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return raw(u(1)).slice();
      case 0xc5: return raw(u(2)).slice();
      case 0xc6: return raw(u(4)).slice();
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return u(8);
      case 0xd0: need(1); return view.getInt8(p++);
      case 0xd1: need(2); p += 2; return view.getInt16(p - 2);
      case 0xd2: need(4); p += 4; return view.getInt32(p - 4);
      case 0xd3: { need(8); p += 8; const v = view.getBigInt64(p - 8); return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
      case 0xca: need(4); p += 4; return view.getFloat32(p - 4);
      case 0xcb: need(8); p += 8; return view.getFloat64(p - 8);
      case 0xd9: return utf8dec.decode(raw(u(1)));
      case 0xda: return utf8dec.decode(raw(u(2)));
      case 0xdb: return utf8dec.decode(raw(u(4)));
      case 0xdc: return arr(u(2));
      case 0xdd: return arr(u(4));
      case 0xde: return map(u(2));
      case 0xdf: return map(u(4));
      case 0xc7: return ext(u(1));
      case 0xc8: return ext(u(2));
      case 0xc9: return ext(u(4));
      default: throw new Error(`msgpack type 0x${b.toString(16)} is not used by meshgate`);
    }
  };
  const arr = (n) => { const a = []; for (let i = 0; i < n; i++) a.push(dec()); return a; };
  const map = (n) => { const m = {}; for (let i = 0; i < n; i++) { const k = dec(); m[k] = dec(); } return m; };
  const ext = (n) => {
    need(1);
    const type = view.getInt8(p++);
    const data = raw(n);
    if (type !== 1 || n < 4) throw new Error(`extension type ${type} is not meshgate's`);
    const hlen = new DataView(data.buffer, data.byteOffset).getUint32(0);
    return { headers: utf8dec.decode(data.subarray(4, 4 + hlen)), body: data.slice(4 + hlen) };
  };
  const value = dec();
  return [value, p];
}

// -- the client ------------------------------------------------------------------------

/** A protocol error sent by the node (ERROR frame): `code` and `reason`. */
export class ServerError extends Error {
  constructor(code, reason) {
    super(`meshgate error ${code}: ${reason}`);
    this.code = code;
    this.reason = reason;
  }
}

/** A request nobody can receive (the node's no-responders answer). */
export class NoRespondersError extends Error {
  constructor(subject) {
    super(`no responders for a request on ${subject}`);
    this.subject = subject;
  }
}

/** A request whose reply did not come within its timeout. */
export class RequestTimeoutError extends Error {
  constructor(subject, ms) {
    super(`no reply to a request on ${subject} within ${ms} ms`);
    this.subject = subject;
  }
}

async function openSession(url, options) {
  const wtOptions = {};
  if (options.serverCertificateHashes) wtOptions.serverCertificateHashes = options.serverCertificateHashes;
  const transport = new WebTransport(url, wtOptions);
  await transport.ready;
  const stream = await transport.createBidirectionalStream();
  return [transport, stream];
}

/**
 * Open a WebTransport session to `url` (https://host:port/path of a node's
 * webtransport:// listener), say HELLO and wait for the node's answer.
 * options: token, session (secret session key, >= 16 characters: the node derives the
 * player's game identity from it, so reconnecting with the same key keeps inputs
 * deduplicated), inputSeq (the last input sequence number sent before with that key),
 * name, serverCertificateHashes (for a self-signed certificate valid
 * at most 14 days), onError(ServerError), onClose() (closed for good),
 * reconnect (default true), maxReconnectAttempts (default 60 in a row),
 * reconnectWait (ms, default 250: the first wait; it doubles up to 5 s, jittered),
 * onDisconnect(), onReconnect(attempts).
 * Resolves to a Client; rejects with a ServerError when the node refuses (bad token).
 */
export async function connect(url, options = {}) {
  const [transport, stream] = await openSession(url, options);
  const client = new Client(transport, stream, options);
  client.url = url;
  await client._handshake();
  return client;
}

/** A connected client: see `connect`. */
export class Client {
  constructor(transport, stream, options) {
    this.transport = transport;
    this.options = options;
    this.writer = stream.writable.getWriter();
    this.reader = stream.readable.getReader();
    this.subs = new Map(); // sid -> callback(msg)
    this.patterns = new Map(); // sid -> [pattern, queue]: made again after a reconnect
    this.nextSid = 1;
    /** the URL the client (re)connects to */
    this.url = null;
    /** times the client reconnected */
    this.reconnects = 0;
    this._recent = []; // the last RECENT_INPUTS input frames, sent again on reconnect
    this._requests = new Map(); // token -> {resolve, reject, timer}
    this._inbox = null; // "_INBOX.<random>" once the first request made its subscription
    this._nextRequest = 1;
    this._established = false; // the handshake of the current session completed
    this._reconnecting = false;
    /** the last input sequence number sent: with a session key, keep it across
     * reconnects and page reloads (options.inputSeq); the owner applies each
     * (player, seq) once, so a restart from 0 would be taken for retries */
    this.inputSeq = options.inputSeq ?? 0;
    this.kseq = new Map(); // `${sid} ${key}` -> last kseq delivered
    /** the node's HELLO fields (features, max_payload, name) */
    this.server = null;
    /** the latest INFO (cluster, client_urls) */
    this.info = null;
    /** keyed messages dropped as older than one already delivered */
    this.staleDropped = 0;
    /** datagrams received, and those that were not one keyed MSG */
    this.datagrams = 0;
    this.badDatagrams = 0;
    this.closed = false;
    this._helloWaiter = null;
  }

  async _handshake() {
    const hello = {
      version: PROTOCOL_VERSION, role: "client", name: this.options.name ?? "meshgate.js",
      features: ["no-responders"],
    };
    if (this.options.token !== undefined) hello.token = this.options.token;
    if (this.options.session !== undefined) hello.session = this.options.session;
    // the node answers HELLO with its own, then checks the token: the PONG to the
    // PING after HELLO says it accepted us (an ERROR says why not)
    const answered = new Promise((resolve, reject) => { this._helloWaiter = { resolve, reject }; });
    this._pongs = [() => {
      if (this._helloWaiter) { this._helloWaiter.resolve(); this._helloWaiter = null; }
    }];
    this._established = false;
    await this._send([OP.HELLO, hello]);
    await this._send([OP.PING]);
    this._readLoop();
    this._datagramLoop();
    await answered;
    this._established = true; // from now on, losing the session means reconnecting
  }

  _send(frame) {
    return this.writer.write(encode(frame));
  }

  /** Subscribe to `pattern` (NATS-style wildcards `*` and `>`), optionally in a queue
   * group; `callback({subject, reply, payload, unreliable, key, kseq})` per message.
   * Returns the subscription id (for `unsubscribe`). */
  async subscribe(pattern, callback, queue = null) {
    const sid = this.nextSid++;
    this.subs.set(sid, callback);
    this.patterns.set(sid, [pattern, queue]);
    await this._send([OP.SUB, sid, pattern, queue]);
    return sid;
  }

  /** Stop subscription `sid`. */
  async unsubscribe(sid) {
    this.subs.delete(sid);
    this.patterns.delete(sid);
    await this._send([OP.UNSUB, sid, null]);
  }

  /** Publish `payload` on `subject` with a unique reply subject and resolve with the
   * first reply ({subject, reply, payload, ...}).  Rejects with NoRespondersError at
   * once when the node knows nobody can receive it, with RequestTimeoutError after
   * `timeout` ms (default 5000). */
  async request(subject, payload, { timeout = 5000 } = {}) {
    if (this._inbox === null) {
      const rand = crypto.getRandomValues(new Uint8Array(8));
      this._inbox = `_INBOX.${Array.from(rand, (b) => b.toString(16).padStart(2, "0")).join("")}`;
      await this.subscribe(`${this._inbox}.*`, (m) => this._reply(m));
    }
    if (this._requests.size >= MAX_REQUESTS) throw new Error(`more than ${MAX_REQUESTS} requests wait`);
    const token = String(this._nextRequest++);
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._requests.delete(token);
        reject(new RequestTimeoutError(subject, timeout));
      }, timeout);
      this._requests.set(token, { resolve, reject, timer, subject });
    });
    await this.publish(subject, payload, { reply: `${this._inbox}.${token}` });
    return answer;
  }

  _reply(m) {
    const token = m.subject.slice(m.subject.lastIndexOf(".") + 1);
    const waiter = this._requests.get(token);
    if (waiter === undefined) return; // late, or answered already
    this._requests.delete(token);
    clearTimeout(waiter.timer);
    const p = m.payload;
    // the no-responders answer: an empty body under a "NATS/1.0 503" header block
    if (p && p.headers !== undefined && p.headers.startsWith("NATS/1.0 503") && p.body.length === 0) {
      waiter.reject(new NoRespondersError(waiter.subject));
    } else {
      waiter.resolve(m);
    }
  }

  /** Publish `payload` (Uint8Array or string) on `subject`; `key` names coalescable
   * state (the latest value of an entity or cell). */
  async publish(subject, payload, { reply = null, key = null } = {}) {
    const body = typeof payload === "string" ? utf8enc.encode(payload) : payload;
    await this._send([OP.PUB, subject, reply, body, key]);
  }

  /** Send a game input for `entity` with the next sequence number (returned); with
   * `relay`, the data is also relayed at once, provisionally, on that subject. */
  async sendInput(entity, data, relay = undefined) {
    const seq = ++this.inputSeq;
    const body = typeof data === "string" ? utf8enc.encode(data) : data;
    const input = relay === undefined ? [seq, body] : [seq, body, relay];
    const frame = [OP.PUB, `$IN.${entity}`, null, encode(input), null];
    this._recent.push(frame);
    if (this._recent.length > RECENT_INPUTS) this._recent.shift();
    await this._send(frame);
    return seq;
  }

  /** Round trip to the node: resolves when its PONG arrives. */
  async flush() {
    const pong = new Promise((resolve) => { this._pongs.push(resolve); });
    await this._send([OP.PING]);
    await pong;
  }

  /** End the session (for good: no reconnect). */
  async close() {
    if (this.closed) return;
    this.closed = true;
    this._failRequests(new Error("the client is closed"));
    try { await this.writer.close(); } catch (e) { /* already gone */ }
    this.transport.close();
  }

  _failRequests(err) {
    for (const w of this._requests.values()) { clearTimeout(w.timer); w.reject(err); }
    this._requests.clear();
  }

  /** The session ended without close(): open it again (options.reconnect), or end. */
  async _lost() {
    const o = this.options;
    if (this.closed || o.reconnect === false || this.url === null) {
      this.closed = true;
      this._failRequests(new Error("the node closed the session"));
      o.onClose?.();
      return;
    }
    o.onDisconnect?.();
    this._reconnecting = true;
    try {
      if (await this._reconnect(o)) return;
    } finally {
      this._reconnecting = false;
    }
    this.closed = true;
    this._failRequests(new Error("the session is lost"));
    o.onClose?.();
  }

  async _reconnect(o) {
    let wait = o.reconnectWait ?? 250;
    const attempts = o.maxReconnectAttempts ?? 60;
    for (let n = 1; n <= attempts && !this.closed; n++) {
      await new Promise((r) => setTimeout(r, wait * (0.5 + Math.random())));
      wait = Math.min(wait * 2, 5000);
      try {
        const [transport, stream] = await openSession(this.url, o);
        this.transport = transport;
        this.writer = stream.writable.getWriter();
        this.reader = stream.readable.getReader();
        this.kseq.clear(); // a new connection numbers every key from 1 again
        try {
          await this._handshake();
        } catch (e) {
          try { transport.close(); } catch (_) { /* gone */ }
          throw e;
        }
        for (const [sid, [pattern, queue]] of this.patterns) await this._send([OP.SUB, sid, pattern, queue]);
        for (const frame of this._recent) await this._send(frame);
        this.reconnects++;
        o.onReconnect?.(n);
        return true;
      } catch (e) {
        // refused for good (the credential is gone); other errors (a node shutting down,
        // full) and lost sessions: try again
        if (e instanceof ServerError && (e.code === 7 || e.code === 12)) return false;
      }
    }
    return false;
  }

  _frame(f) {
    switch (f[0]) {
      case OP.MSG: {
        const cb = this.subs.get(f[1]);
        if (cb === undefined) return;
        if (f.length === 7) this._keyed(f, false, cb);
        else cb({ subject: f[2], reply: f[3], payload: f[4], unreliable: false });
        return;
      }
      case OP.PING: this._send([OP.PONG]).catch(() => {}); return;
      case OP.PONG: { const r = this._pongs?.shift(); if (r) r(); return; }
      case OP.HELLO: this.server = f[1]; return;
      case OP.INFO: this.info = f[1]; return;
      case OP.ERROR: {
        const err = new ServerError(f[1], f[2]);
        if (f.length === 4) { this.subs.delete(f[3]); this.patterns.delete(f[3]); } // refused
        if (this._helloWaiter) { this._helloWaiter.reject(err); this._helloWaiter = null; }
        this.options.onError?.(err);
        return;
      }
      default: return; // nothing else is legal to a client; the node never sends it
    }
  }

  _keyed(f, unreliable, cb) {
    const [, sid, subject, reply, payload, kseq, key] = f;
    const k = `${sid} ${key}`;
    const last = this.kseq.get(k);
    if (last !== undefined && kseq <= last) { this.staleDropped++; return; }
    if (last === undefined && this.kseq.size >= KSEQ_SEEN_MAX) this.kseq.delete(this.kseq.keys().next().value);
    this.kseq.set(k, kseq);
    cb({ subject, reply, payload, unreliable, key, kseq });
  }

  async _readLoop() {
    let buf = new Uint8Array(0);
    try {
      for (;;) {
        const { value, done } = await this.reader.read();
        if (done) break;
        const joined = new Uint8Array(buf.length + value.length);
        joined.set(buf);
        joined.set(value, buf.length);
        buf = joined;
        let p = 0;
        for (;;) {
          let frame;
          try { [frame, p] = decode(buf, p); } catch (e) { if (e instanceof Incomplete) break; throw e; }
          this._frame(frame);
        }
        buf = buf.slice(p);
      }
    } catch (e) {
      if (!this.closed) this.options.onError?.(e); // our own close() ends reads too
    } finally {
      if (this._helloWaiter) {
        this._helloWaiter.reject(new Error("the node closed the session"));
        this._helloWaiter = null;
      }
      // a handshake that failed is connect()'s (or the reconnect loop's) to report
      if (this._established) {
        this._established = false;
        this._lost();
      } else if (!this._reconnecting) {
        this.closed = true; // connect() failed: this client never was
      }
    }
  }

  async _datagramLoop() {
    const reader = this.transport.datagrams.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        this.datagrams++;
        let f;
        try {
          let end;
          [f, end] = decode(value, 0);
          if (end !== value.length || !Array.isArray(f) || f[0] !== OP.MSG || f.length !== 7) throw new Error();
        } catch (e) { this.badDatagrams++; continue; }
        const cb = this.subs.get(f[1]);
        if (cb !== undefined) this._keyed(f, true, cb);
      }
    } catch (e) { /* the session ended */ }
  }
}
