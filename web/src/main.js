// The face3d viewer: connects to the stream, rebuilds the ICT face (or drives a loaded avatar),
// shows connection state, fps and latency. `window.face3d` exposes state for tests and debugging.
import * as THREE from 'three';
import { StreamClient, streamUrl } from './connection.js';
import { ICTFace } from './ictface.js';
import { loadAvatar } from './avatar.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);

const canvas = $('view');
// Software GL (SwiftShader, llvmpipe: headless browsers, VMs) pays ~3x for antialiasing: skip
// it there. ?aa=1 / ?aa=0 overrides.
function softwareGL() {
  const gl = document.createElement('canvas').getContext('webgl2');
  const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');
  const name = ext ? String(gl.getParameter(ext.UNMASKED_RENDERER_WEBGL)) : '';
  if (gl) gl.getExtension('WEBGL_lose_context')?.loseContext();
  return /swiftshader|llvmpipe|software/i.test(name);
}
const antialias = params.has('aa') ? params.get('aa') !== '0' : !softwareGL();
const renderer = new THREE.WebGLRenderer({ canvas, antialias, preserveDrawingBuffer: true });
renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x1d2127);
const camera = new THREE.PerspectiveCamera(30, 1, 0.01, 100);
scene.add(new THREE.HemisphereLight(0xffffff, 0x404050, 1.2));
const key = new THREE.DirectionalLight(0xffffff, 2.0);
key.position.set(0.4, 0.6, 1.0);
scene.add(key);
const head = new THREE.Group();   // receives the head pose
scene.add(head);

const client = new StreamClient(streamUrl(), { format: params.get('format') || 'binary' });
let ict = null;          // ICTFace once the mesh arrived
let avatar = null;       // Avatar when loaded
let identities = new Map();
let renderFrames = 0, renderFps = 0, renderT0 = performance.now();
let lastSeqDrawn = -1, framesDrawn = 0, lastError = '';
let dirty = true;          // something changed since the last render

function resize() {
  const w = window.innerWidth, h = window.innerHeight;
  renderer.setSize(w, h, false);
  camera.aspect = w / h;
  camera.updateProjectionMatrix();
}
window.addEventListener('resize', resize);
resize();

function setState(text, cls) {
  $('state').textContent = text;
  $('dot').className = `dot ${cls}`;
}

client.addEventListener('state', (e) => {
  const s = e.detail.state;
  const label = { connecting: 'connecting…', reconnecting: 'disconnected – reconnecting…',
                  open: 'connected – waiting for frames', streaming: 'streaming' }[s] || s;
  setState(label, s);
});
client.addEventListener('hello', (e) => {
  const h = e.detail.hello;
  $('source').textContent = `${h.source.kind} ${h.source.width}×${h.source.height}` + (h.fps ? ` @ ${h.fps.toFixed(1)} fps` : '');
  identities = new Map();
});
client.addEventListener('mesh', (e) => {
  if (ict) head.remove(ict.group);
  ict = new ICTFace(e.detail.blob);
  const face = firstFace(client.lastFrame);
  if (face && identities.has(face.id)) ict.setIdentity(identities.get(face.id));
  if (!avatar) head.add(ict.group);
});
client.addEventListener('identity', (e) => {
  const m = e.detail.msg;
  identities.set(m.id, m.coefficients);
  const face = firstFace(client.lastFrame);
  if (ict && (!face || face.id === m.id)) ict.setIdentity(m.coefficients);
});
client.addEventListener('source', (e) => {
  const m = e.detail.msg;
  $('source').textContent = m.state === 'live' ? $('source').textContent : `source ${m.state}${m.reason ? ': ' + m.reason : ''}`;
});

function firstFace(frame) {
  if (!frame) return null;
  let best = null;
  for (const f of frame.faces) if (f.status === 'tracked' && (!best || f.id < best.id)) best = f;
  return best;
}

// Framing: "centred" puts the face centre at a fixed spot in front of the camera and only turns
// it; "camera view" uses the tracked translation and the tracking camera's field of view.
const CENTRE_DIST = 0.55;
const IDENTITY = new THREE.Quaternion();
function placeHead(face) {
  const q = face.pose.q;
  if (!q.every(Number.isFinite) || !Array.from(face.pose.t).every(Number.isFinite)) return false;
  // the ICT face turns as a whole; an avatar turns its own head (Avatar.apply)
  if (avatar) head.quaternion.copy(IDENTITY);
  else head.quaternion.set(q[1], q[2], q[3], q[0]);
  if ($('follow').checked && client.hello) {
    const c = client.hello.camera;
    camera.fov = 2 * Math.atan(c.height / 2 / c.fy) * 180 / Math.PI;
    camera.updateProjectionMatrix();
    head.position.set(face.pose.t[0], face.pose.t[1], face.pose.t[2]);
    return true;
  }
  if (camera.fov !== 30) { camera.fov = 30; camera.updateProjectionMatrix(); }
  if (avatar) {
    head.position.set(0, 0, -Math.max(0.3, 1.6 * avatar.size));
    return true;
  }
  const centre = ict ? ict.centre.clone() : new THREE.Vector3();
  centre.applyQuaternion(head.quaternion);
  head.position.set(-centre.x, -centre.y, -CENTRE_DIST - centre.z);
  return true;
}

$('mirror').addEventListener('change', (e) => canvas.classList.toggle('mirror', e.target.checked));
$('avatar-file').addEventListener('change', async (e) => {
  const file = e.target.files[0];
  if (file) await useAvatar(file);
});
$('ict-button').addEventListener('click', () => {
  if (avatar) { head.remove(avatar.root); avatar = null; }
  if (ict) head.add(ict.group);
  $('avatar-info').textContent = '';
});

async function useAvatar(source) {
  try {
    $('avatar-info').textContent = 'loading avatar…';
    const a = await loadAvatar(source);
    if (avatar) head.remove(avatar.root);
    if (ict) head.remove(ict.group);
    avatar = a;
    dirty = true;
    head.add(avatar.root);
    const s = avatar.summary();
    $('avatar-info').textContent = `${s.label}: ${s.morphTargets} morph targets` +
      (s.vrm ? `, ${s.expressions} VRM expressions` : '') + (s.headBone ? `, head bone ${s.headBone}` : '');
  } catch (err) {
    lastError = String(err);
    $('avatar-info').textContent = `cannot load avatar: ${err.message || err}`;
  }
}
if (params.get('avatar')) useAvatar(params.get('avatar'));

// Render on demand: when a new frame arrived or the scene changed (a VRM avatar animates its
// spring bones, so it renders every animation frame). Saves a lot of CPU on software GL.
const markDirty = () => { dirty = true; };
window.addEventListener('resize', markDirty);
for (const ev of ['mesh', 'identity', 'hello']) client.addEventListener(ev, markDirty);
for (const id of ['mirror', 'follow', 'ict-button']) $(id).addEventListener('click', markDirty);
let lastTime = performance.now();
function render() {
  requestAnimationFrame(render);
  const now = performance.now();
  const dt = (now - lastTime) / 1000;
  lastTime = now;
  const frame = client.lastFrame;
  const face = firstFace(frame);
  const fresh = frame && frame.seq !== lastSeqDrawn;
  if (fresh || dirty || (avatar && avatar.vrm)) {
    if (face && placeHead(face)) {
      if (avatar) avatar.apply(face, client.hello);
      else if (ict) ict.apply(face, client.hello.blendshape_names);
    }
    if (fresh) { lastSeqDrawn = frame.seq; if (face) framesDrawn += 1; }
    if (avatar) avatar.update(dt);
    renderer.render(scene, camera);
    renderFrames += 1;
    dirty = false;
  }
  if (now - renderT0 >= 500) {
    renderFps = (1000 * renderFrames) / (now - renderT0);
    renderFrames = 0; renderT0 = now;
    $('fps').textContent = client.fps.toFixed(0);
    $('rfps').textContent = renderFps.toFixed(0);
    $('latency').textContent = Number.isFinite(client.latencyMs) ? client.latencyMs.toFixed(1) : '–';
    $('rtt').textContent = Number.isFinite(client.rttMs) ? client.rttMs.toFixed(1) : '–';
    const n = frame ? frame.faces.filter((f) => f.status === 'tracked').length : 0;
    $('faces').textContent = n ? `${n} face${n > 1 ? 's' : ''} (id ${face.id}, confidence ${face.confidence.toFixed(2)})` : 'no face';
  }
}
render();

window.face3d = {
  client,
  get state() { return client.state; },
  stats() {
    const face = firstFace(client.lastFrame);
    return {
      state: client.state, framesReceived: client.framesReceived, framesDrawn,
      lastSeq: client.lastFrame ? client.lastFrame.seq : -1, streamFps: client.fps, renderFps,
      latencyMs: client.latencyMs, rttMs: client.rttMs, meshLoaded: !!ict,
      identityRev: face ? face.identity_rev : -1, identities: identities.size,
      closeCodes: [...client.closeCodes], avatar: avatar ? avatar.summary() : null, lastError,
      jawOpen: ict && face ? ict.weights[ict.expNames.indexOf('jawOpen')] : null,
    };
  },
  loadAvatar: useAvatar,
};
client.start();
