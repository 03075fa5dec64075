// StreamClient: one WebSocket to `face3d serve`, reconnecting by itself, with stream statistics.
// Events (EventTarget): 'state' {state}, 'hello' {hello}, 'frame' {frame}, 'identity' {msg},
// 'mesh' {blob}, 'source' {msg}.
import { decodeBlob, decodeFrame, isFrame, PROTOCOL_VERSION } from './protocol.js';

const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
const PING_MS = 2000;

export class StreamClient extends EventTarget {
  /** @param {string} url ws://host:port/ws[?token=T]; options: format ('binary'|'json'), meshDtype. */
  constructor(url, { format = 'binary', meshDtype = 'float16' } = {}) {
    super();
    this.url = url;
    this.format = format;
    this.meshDtype = meshDtype;
    this.state = 'connecting';
    this.hello = null;
    this.mesh = null;           // {header, arrays}, kept across reconnects of the same model
    this.meshKey = null;
    this.ws = null;
    this.attempt = 0;
    this.framesReceived = 0;
    this.lastFrame = null;
    this.closeCodes = [];
    this._frameTimes = [];      // performance.now() of recent frames
    this._latencies = [];       // seconds, recent frames
    this.rttMs = NaN;
    this.clockOffset = 0;       // server clock - local clock, seconds (from ping/pong)
    this._bestRtt = Infinity;
    this._pingTimer = null;
    this._retryTimer = null;
    this._stopped = false;
  }

  start() { this._connect(); return this; }

  stop() {
    this._stopped = true;
    clearInterval(this._pingTimer);
    clearTimeout(this._retryTimer);
    if (this.ws) this.ws.close(1000, 'viewer closed');
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state } }));
  }

  _connect() {
    this._setState(this.attempt ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this._scheduleRetry();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (ev) => this._onMessage(ev.data);
    ws.onclose = (ev) => {
      this.closeCodes.push(ev.code);
      clearInterval(this._pingTimer);
      if (this.ws === ws) this.ws = null;
      if (!this._stopped) this._scheduleRetry();
    };
  }

  _scheduleRetry() {
    this._setState('reconnecting');
    const ms = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this._retryTimer = setTimeout(() => this._connect(), ms);
  }

  _send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  _onMessage(data) {
    if (typeof data !== 'string') {
      if (isFrame(data)) this._onFrame(decodeFrame(data));
      else {
        this.mesh = decodeBlob(data);
        this.dispatchEvent(new CustomEvent('mesh', { detail: { blob: this.mesh } }));
      }
      return;
    }
    const msg = JSON.parse(data);
    switch (msg.type) {
      case 'hello': this._onHello(msg); break;
      case 'frame': this._onFrame(msg); break;
      case 'pong': this._onPong(msg); break;
      case 'identity': this.dispatchEvent(new CustomEvent('identity', { detail: { msg } })); break;
      case 'source': this.dispatchEvent(new CustomEvent('source', { detail: { msg } })); break;
      default: break; // unknown types are ignored (forward compatibility)
    }
  }

  _onHello(hello) {
    if (hello.protocol !== PROTOCOL_VERSION) console.warn(`face3d: server protocol ${hello.protocol}, viewer ${PROTOCOL_VERSION}`);
    this.hello = hello;
    this.attempt = 0;
    this._bestRtt = Infinity;      // a (re)connection may be to another server: new clock
    this._offsetFloor = undefined;
    this._setState('open');
    this._send({ type: 'subscribe', format: this.format, arkit: true, landmarks: false });
    const key = `${hello.model.name}@${hello.model.version}`;
    if (this.meshKey !== key) {
      this.meshKey = key;
      this.mesh = null;
      this._send({ type: 'request', what: 'mesh', dtype: this.meshDtype, identity_basis: true });
    }
    this.dispatchEvent(new CustomEvent('hello', { detail: { hello } }));
    this._ping();
    this._pingTimer = setInterval(() => this._ping(), PING_MS);
  }

  _ping() { this._send({ type: 'ping', id: performance.now() }); }

  _onPong(msg) {
    const now = performance.now();
    const rtt = now - msg.id;
    this.rttMs = rtt;
    // clock offset from the ping with the smallest round trip seen so far (most accurate)
    if (rtt <= this._bestRtt * 1.5) {
      this._bestRtt = Math.min(this._bestRtt, rtt);
      this.clockOffset = Math.max(msg.t_server - (Date.now() / 1000 - rtt / 2000),
                                  this._offsetFloor ?? -Infinity);
    }
  }

  _onFrame(frame) {
    const now = performance.now();
    this.framesReceived += 1;
    this.lastFrame = frame;
    this._frameTimes.push(now);
    while (this._frameTimes.length && now - this._frameTimes[0] > 1000) this._frameTimes.shift();
    let age = Date.now() / 1000 + this.clockOffset - frame.t_ready;
    if (age < 0) {
      // A frame cannot arrive before it was made: the ping estimate of the clock offset was off
      // (a pong handled late by a busy page looks like a slow server). Raise the offset to the
      // bound this frame proves; later pings can only refine it upward from here.
      this.clockOffset -= age;
      this._offsetFloor = this.clockOffset;
      age = 0;
    }
    this._latencies.push(age);
    if (this._latencies.length > 60) this._latencies.shift();
    if (this.state !== 'streaming') this._setState('streaming');
    this.dispatchEvent(new CustomEvent('frame', { detail: { frame } }));
  }

  /** Frames received in the last second. */
  get fps() {
    const now = performance.now();
    while (this._frameTimes.length && now - this._frameTimes[0] > 1000) this._frameTimes.shift();
    return this._frameTimes.length;
  }

  /** Median age of recent frames on arrival (ms): tracking finished -> received here. */
  get latencyMs() {
    if (!this._latencies.length) return NaN;
    const s = [...this._latencies].sort((a, b) => a - b);
    return 1000 * s[s.length >> 1];
  }
}

/** The stream URL for this page: ?ws=URL overrides; ?token=T is passed on. */
export function streamUrl(loc = window.location) {
  const q = new URLSearchParams(loc.search);
  let url = q.get('ws') || `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
  const token = q.get('token');
  if (token) url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
  return url;
}
