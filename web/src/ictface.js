// The ICT face rebuilt from the server's F3DM mesh blob: identity applied on the CPU (rarely),
// expressions blended on the CPU (every frame), eyeballs turned by the gaze angles.
// Model axes: +x = subject's left, +y up, +z out of the face, metres (as the stream's pose).
import * as THREE from 'three';

const SKIN = new THREE.Color(0xd9a88f);
const MOUTH = new THREE.Color(0x3a1a1c);
const SCLERA = new THREE.Color(0xf2eee8);
const IRIS = new THREE.Color(0x3b5a78);

export class ICTFace {
  /** @param {{header: object, arrays: object}} blob decoded F3DM mesh blob */
  constructor(blob) {
    const { header: h, arrays: a } = blob;
    this.header = h;
    this.expNames = h.exp_names;
    this.nV = h.n_vertices;
    this.nExpV = h.exp_vertices;
    this.neutral = a.neutral;
    this.idBasis = a.id_basis || null;
    this.nId = this.idBasis ? this.idBasis.length / (3 * this.nV) : 0;
    this.base = new Float32Array(this.neutral);   // neutral + identity, (V*3)
    this.identity = null;
    this.pivots = a.eye_pivots || null;            // (2, 3) rows right, left
    this.pivotId = a.eye_pivot_id || null;         // (I, 2, 3)
    this.group = new THREE.Group();
    this.group.name = 'ict-face';
    this._expIndex = null;   // stream blendshape index -> morph index

    // Face + mouth socket: the vertices [0, exp_vertices), with the expression morph targets.
    const tris = a.triangles;
    const faceIdx = [];
    const eyeParts = ['eyeball_left', 'eyeball_right'];
    for (const [name, part] of Object.entries(h.parts)) {
      if (eyeParts.includes(name)) continue;
      const [t0, tn] = part.triangles;
      for (let i = 3 * t0; i < 3 * (t0 + tn); i++) faceIdx.push(tris[i]);
    }
    const g = new THREE.BufferGeometry();
    g.setAttribute('position', new THREE.BufferAttribute(this.base.slice(0, 3 * this.nExpV), 3));
    const colors = new Float32Array(3 * this.nExpV);
    for (let v = 0; v < this.nExpV; v++) SKIN.toArray(colors, 3 * v);
    if (h.parts.mouth_socket) {
      const [v0, vn] = h.parts.mouth_socket.vertices;
      for (let v = v0; v < v0 + vn; v++) MOUTH.toArray(colors, 3 * v);
    }
    g.setAttribute('color', new THREE.BufferAttribute(colors, 3));
    g.setIndex(faceIdx);
    // Expressions are blended on the CPU (E x 3·exp_vertices multiply-adds, skipping zero
    // weights): a few ms, and much cheaper than 53 GPU morph targets on software GL.
    this.expBasis = a.exp_basis;
    this.weights = new Float32Array(this.expNames.length);
    this.influences = this.weights;   // read by tests and the HUD
    g.computeVertexNormals();
    this.faceGeometry = g;
    this.faceMesh = new THREE.Mesh(g, new THREE.MeshStandardMaterial({
      vertexColors: true, roughness: 0.65, metalness: 0.0, side: THREE.DoubleSide }));
    this.faceMesh.name = 'ict-face-mesh';
    this.group.add(this.faceMesh);

    // Eyeballs: rigid, turned by the gaze about the tracker's eye pivots.
    this.eyes = {};
    for (const name of eyeParts) {
      const part = h.parts[name];
      if (!part) continue;
      const [v0, vn] = part.vertices, [t0, tn] = part.triangles;
      const eg = new THREE.BufferGeometry();
      eg.setAttribute('position', new THREE.BufferAttribute(new Float32Array(3 * vn), 3));
      const ec = new Float32Array(3 * vn);
      for (let v = 0; v < vn; v++) SCLERA.toArray(ec, 3 * v);
      const side = name.endsWith('left') ? 'left' : 'right';
      eg.setAttribute('color', new THREE.BufferAttribute(ec, 3));
      const idx = new Uint32Array(3 * tn);
      for (let i = 0; i < 3 * tn; i++) idx[i] = tris[3 * t0 + i] - v0;
      eg.setIndex(new THREE.BufferAttribute(idx, 1));
      const mesh = new THREE.Mesh(eg, new THREE.MeshStandardMaterial({ vertexColors: true, roughness: 0.3 }));
      mesh.name = `ict-${name}`;
      mesh.rotation.order = 'YXZ';  // R_eye = Ry(yaw) Rx(pitch), as the protocol's gaze
      this.eyes[side] = { mesh, v0, vn, row: side === 'right' ? 0 : 1 };
      this.group.add(mesh);
    }
    this._placeEyes();
    // The face centre (model space) used to frame the face: mean of the face part.
    const c = new THREE.Vector3();
    const [f0, fn] = h.parts.face.vertices;
    for (let v = f0; v < f0 + fn; v++) c.add(new THREE.Vector3(this.base[3 * v], this.base[3 * v + 1], this.base[3 * v + 2]));
    this.centre = c.divideScalar(fn);
  }

  // ICT's iris sits behind a clear cornea that is part of the eyeball surface: paint the eyeball
  // vertices in front of the iris disc (rest gaze +z through the pivot) with the iris colour and
  // a pupil, as seen through the cornea.
  _paintIris(eye, pivot) {
    const colors = eye.mesh.geometry.attributes.color;
    const r = this.header.iris_radius_m || 0.006;
    const pupil = new THREE.Color(0x0b0b0d);
    for (let v = 0; v < eye.vn; v++) {
      const o = 3 * (eye.v0 + v);
      const dx = this.base[o] - pivot[0], dy = this.base[o + 1] - pivot[1], dz = this.base[o + 2] - pivot[2];
      const d = Math.hypot(dx, dy);
      const c = dz <= 0 || d >= r ? SCLERA : d < 0.42 * r ? pupil : IRIS;
      c.toArray(colors.array, 3 * v);
    }
    colors.needsUpdate = true;
  }

  /** The eye's pivot with the current identity (the tracker's own eye centre). */
  _pivot(eye) {
    const P = this.pivots, row = eye.row, out = [0, 0, 0];
    for (let d = 0; d < 3; d++) out[d] = P ? P[3 * row + d] : 0;
    if (!P) {  // an older server without pivots: the mean of the eyeball vertices
      for (let v = eye.v0; v < eye.v0 + eye.vn; v++) for (let d = 0; d < 3; d++) out[d] += this.base[3 * v + d] / eye.vn;
      return out;
    }
    const I = this.pivotId, k = this.identity ? Math.min(this.identity.length, I.length / 6) : 0;
    for (let i = 0; i < k; i++) for (let d = 0; d < 3; d++) out[d] += this.identity[i] * I[6 * i + 3 * row + d];
    return out;
  }

  /** Apply identity coefficients (length n_identity; missing basis -> mean face). */
  setIdentity(coefficients) {
    this.identity = coefficients;
    this.base.set(this.neutral);
    if (this.idBasis) {
      const n = 3 * this.nV, b = this.base, B = this.idBasis;
      const k = Math.min(coefficients.length, this.nId);
      for (let i = 0; i < k; i++) {
        const c = coefficients[i];
        if (c === 0) continue;
        for (let j = 0, o = i * n; j < n; j++) b[j] += c * B[o + j];
      }
    }
    this._blend();
    this.faceGeometry.computeBoundingSphere();
    this._placeEyes();
  }

  /** positions = base + sum_k w_k exp_k over the face vertices; normals recomputed. */
  _blend() {
    const n = 3 * this.nExpV, pos = this.faceGeometry.attributes.position, p = pos.array;
    p.set(this.base.subarray(0, n));
    const B = this.expBasis, w = this.weights;
    for (let k = 0; k < w.length; k++) {
      const c = w[k];
      if (!(Math.abs(c) > 1e-4)) continue;
      for (let j = 0, o = k * n; j < n; j++) p[j] += c * B[o + j];
    }
    pos.needsUpdate = true;
    this.faceGeometry.computeVertexNormals();
  }

  _placeEyes() {
    for (const eye of Object.values(this.eyes)) {
      const { mesh, v0, vn } = eye;
      const c = this._pivot(eye);
      this._paintIris(eye, c);
      const p = mesh.geometry.attributes.position;
      for (let v = 0; v < vn; v++) for (let d = 0; d < 3; d++) p.array[3 * v + d] = this.base[3 * (v0 + v) + d] - c[d];
      p.needsUpdate = true;
      mesh.geometry.computeVertexNormals();
      mesh.geometry.computeBoundingSphere();
      mesh.position.set(c[0], c[1], c[2]);
    }
  }

  /** Drive with one face of a frame message; `names` = hello.blendshape_names. */
  apply(face, names) {
    if (!this._expIndex || this._expNamesFrom !== names) {
      const pos = new Map(this.expNames.map((n, i) => [n, i]));
      this._expIndex = names.map((n) => (pos.has(n) ? pos.get(n) : -1));
      this._expNamesFrom = names;
    }
    const w = face.blendshapes;
    let changed = false;
    for (let i = 0; i < w.length; i++) {
      const k = this._expIndex[i];
      if (k >= 0 && this.weights[k] !== w[i]) { this.weights[k] = w[i]; changed = true; }
    }
    if (changed) this._blend();
    const deg = Math.PI / 180;
    for (const side of ['left', 'right']) {
      const eye = this.eyes[side], g = face.gaze && face.gaze[side];
      if (eye && g) eye.mesh.rotation.set(g[1] * deg, g[0] * deg, 0);
    }
  }
}
