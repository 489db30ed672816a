// A minimal TURN client (RFC 8656 long-term credentials over UDP), run inside the lab's network
// namespace by turn-interop.test.mjs: coturn's uclient never frees its allocations, so it cannot
// show that a freed relay's port is handed out again at once.
//
// Usage: node turn-reuse.mjs SERVER_PORT USER PASS REALM
// Prints one JSON line: what each step of the scenario got.

import dgram from 'node:dgram';
import { createHash, createHmac, randomBytes } from 'node:crypto';

const [port, user, pass, realm] = [Number(process.argv[2]), ...process.argv.slice(3)];
const MAGIC = 0x2112a442;
const key = createHash('md5').update(`${user}:${realm}:${pass}`).digest();

function attr(type, value) {
  const pad = (4 - (value.length % 4)) % 4;
  const head = Buffer.alloc(4);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(value.length, 2);
  return Buffer.concat([head, value, Buffer.alloc(pad)]);
}

/** A request with `attrs`, signed with MESSAGE-INTEGRITY when `nonce` is known. */
function request(method, attrs, nonce) {
  const txid = randomBytes(12);
  let body = Buffer.concat(attrs);
  if (nonce) {
    body = Buffer.concat([body, attr(0x0006, Buffer.from(user)), attr(0x0014, Buffer.from(realm)),
      attr(0x0015, Buffer.from(nonce))]);
  }
  const header = (len) => {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(method, 0);
    h.writeUInt16BE(len, 2);
    h.writeUInt32BE(MAGIC, 4);
    txid.copy(h, 8);
    return h;
  };
  if (!nonce) return Buffer.concat([header(body.length), body]);
  // The length covers MESSAGE-INTEGRITY itself (24 bytes) when the HMAC is computed.
  const hmac = createHmac('sha1', key).update(Buffer.concat([header(body.length + 24), body])).digest();
  return Buffer.concat([header(body.length + 24), body, attr(0x0008, hmac)]);
}

function parse(msg) {
  const out = { type: msg.readUInt16BE(0), attrs: new Map() };
  for (let at = 20; at + 4 <= msg.length;) {
    const type = msg.readUInt16BE(at);
    const len = msg.readUInt16BE(at + 2);
    out.attrs.set(type, msg.subarray(at + 4, at + 4 + len));
    at += 4 + len + ((4 - (len % 4)) % 4);
  }
  const err = out.attrs.get(0x0009);
  out.code = err ? err[2] * 100 + err[3] : null;
  const relayed = out.attrs.get(0x0016);
  out.relayPort = relayed ? relayed.readUInt16BE(2) ^ (MAGIC >>> 16) : null;
  const nonce = out.attrs.get(0x0015);
  out.nonce = nonce ? nonce.toString() : null;
  return out;
}

class Client {
  constructor() {
    this.sock = dgram.createSocket('udp4');
    this.nonce = null;
  }

  send(buf) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer')), 3000);
      this.sock.once('message', (msg) => {
        clearTimeout(timer);
        resolve(parse(msg));
      });
      this.sock.send(buf, port, '127.0.0.1');
    });
  }

  /** A request, retried once with the realm's nonce after the 401 challenge. */
  async ask(method, attrs) {
    let res = await this.send(request(method, attrs, this.nonce));
    if (res.code === 401 || res.code === 438) {
      this.nonce = res.nonce;
      res = await this.send(request(method, attrs, this.nonce));
    }
    return res;
  }

  allocate() {
    return this.ask(0x0003, [attr(0x0019, Buffer.from([17, 0, 0, 0]))]);
  }

  free() {
    return this.ask(0x0004, [attr(0x000d, Buffer.from([0, 0, 0, 0]))]);
  }
}

const [a, b] = [new Client(), new Client()];
const first = await a.allocate();
const whileTaken = await b.allocate();
const freed = await a.free();
const afterFree = await b.allocate();
console.log(JSON.stringify({
  first: { code: first.code, relayPort: first.relayPort },
  whileTaken: { code: whileTaken.code },
  freed: { type: freed.type, code: freed.code },
  afterFree: { code: afterFree.code, relayPort: afterFree.relayPort },
}));
a.sock.close();
b.sock.close();
