// face3d stream protocol v1, browser side: decoding of the binary F3DF frame and F3DM blob.
// The normative description is ../PROTOCOL.md; tracker/protocol.py is the server side.

export const PROTOCOL_VERSION = 1;
const FRAME_MAGIC = 0x46443346; // "F3DF" read as little-endian u32
const BLOB_MAGIC = 0x4d443346;  // "F3DM"
const FRAME_HEAD = 44;
const FACE_HEAD = 8;
const N_FIXED = 15; // confidence, q(4), t(3), euler(3), gaze(4)
const N_ARKIT = 52;

/** Is this ArrayBuffer an F3DF frame (else an F3DM blob)? */
export function isFrame(buf) {
  return buf.byteLength >= 4 && new DataView(buf).getUint32(0, true) === FRAME_MAGIC;
}

/** Parse an F3DF frame into the same shape as the JSON "frame" message (arrays are Float32Array views). */
export function decodeFrame(buf) {
  const dv = new DataView(buf);
  if (buf.byteLength < FRAME_HEAD || dv.getUint32(0, true) !== FRAME_MAGIC) throw new Error('not an F3DF frame');
  const version = dv.getUint16(4, true);
  if (version !== PROTOCOL_VERSION) throw new Error(`F3DF version ${version}`);
  const flags = dv.getUint16(6, true);
  const msg = {
    type: 'frame', seq: dv.getUint32(8, true), frame: dv.getUint32(12, true),
    t_capture: dv.getFloat64(16, true), t_ready: dv.getFloat64(24, true),
    track_ms: dv.getFloat32(32, true), faces: [],
  };
  const nFaces = dv.getUint16(36, true), nExp = dv.getUint16(38, true), nLm = dv.getUint16(40, true);
  const nArk = flags & 1 ? N_ARKIT : 0;
  const nFloat = N_FIXED + nExp + nArk + 2 * nLm;
  let off = FRAME_HEAD;
  for (let i = 0; i < nFaces; i++) {
    const face = { id: dv.getInt32(off, true), status: dv.getUint8(off + 4) ? 'tracked' : 'lost',
                   identity_rev: dv.getUint16(off + 6, true) };
    const v = new Float32Array(buf, off + FACE_HEAD, nFloat);
    off += FACE_HEAD + 4 * nFloat;
    if (face.status === 'tracked') {
      face.confidence = v[0];
      face.pose = { q: v.subarray(1, 5), t: v.subarray(5, 8), euler_deg: v.subarray(8, 11) };
      face.gaze = { right: v.subarray(11, 13), left: v.subarray(13, 15) };
      face.blendshapes = v.subarray(N_FIXED, N_FIXED + nExp);
      if (nArk) face.arkit = v.subarray(N_FIXED + nExp, N_FIXED + nExp + nArk);
      if (nLm) face.landmarks = v.subarray(N_FIXED + nExp + nArk);
    }
    msg.faces.push(face);
  }
  return msg;
}

const F16 = (() => {
  // float16 bits -> float32, as a 65536-entry table (256 KB, built once).
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

function float16ToFloat32(u16) {
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) out[i] = F16[u16[i]];
  return out;
}

/** Parse an F3DM blob: {header, arrays: {name: TypedArray}}; float16 arrays come back as Float32Array. */
export function decodeBlob(buf) {
  const dv = new DataView(buf);
  if (buf.byteLength < 8 || dv.getUint32(0, true) !== BLOB_MAGIC) throw new Error('not an F3DM blob');
  const n = dv.getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, n)));
  const start = 8 + n;
  const arrays = {};
  for (const a of header.arrays) {
    const count = a.shape.reduce((x, y) => x * y, 1);
    const at = start + a.offset;
    switch (a.dtype) {
      case 'float32': arrays[a.name] = new Float32Array(buf, at, count); break;
      case 'float16': arrays[a.name] = float16ToFloat32(new Uint16Array(buf, at, count)); break;
      case 'uint32': arrays[a.name] = new Uint32Array(buf, at, count); break;
      case 'int32': arrays[a.name] = new Int32Array(buf, at, count); break;
      case 'uint8': arrays[a.name] = new Uint8Array(buf, at, count); break;
      default: throw new Error(`F3DM dtype ${a.dtype}`);
    }
  }
  return { header, arrays };
}
