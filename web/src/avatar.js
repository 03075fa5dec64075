// A user's glTF / VRM avatar driven by the stream: morph targets (or VRM expressions) matched by
// name to ARKit-52 (eyeBlinkLeft, …) or to the model's own names (eyeBlink_L, …), and the head
// pose on the head bone (or on the whole avatar when it has no skeleton).
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { VRMLoaderPlugin, VRMUtils } from '@pixiv/three-vrm';

/** 'blendShape1.EyeBlink_Left' -> 'eyeblinkleft'. */
export function normName(s) {
  const last = String(s).split(/[.:|/]/).pop();
  return last.toLowerCase().replace(/[^a-z0-9]/g, '');
}

// VRM preset expressions, for avatars without ARKit ("perfect sync") expressions.
const VRM_PRESETS = {
  blinkleft: ['eyeBlinkLeft'], blinkright: ['eyeBlinkRight'], aa: ['jawOpen'],
  ou: ['mouthPucker'], oh: ['mouthFunnel'], ee: ['mouthStretchLeft', 'mouthStretchRight'],
  ih: ['mouthSmileLeft', 'mouthSmileRight'],
};

export class Avatar {
  constructor(gltf, label) {
    this.label = label;
    this.vrm = gltf.userData.vrm || null;
    this.root = new THREE.Group();       // posed by the viewer (position)
    this.pivot = new THREE.Group();      // turned by the head pose when there is no head bone
    this.root.add(this.pivot);
    const scene = this.vrm ? this.vrm.scene : gltf.scene;
    if (this.vrm) {
      VRMUtils.removeUnnecessaryVertices(scene);
      VRMUtils.rotateVRM0(this.vrm);     // VRM 0.x faces -z; make every avatar face +z
    }
    this.pivot.add(scene);
    scene.updateMatrixWorld(true);
    this.morphs = [];                    // {mesh, index, key}
    scene.traverse((o) => {
      if (o.isMesh && o.morphTargetDictionary) {
        for (const [name, index] of Object.entries(o.morphTargetDictionary)) {
          this.morphs.push({ mesh: o, index, key: normName(name) });
        }
      }
    });
    this.expressions = [];               // VRM: {name, key}
    if (this.vrm && this.vrm.expressionManager) {
      for (const e of this.vrm.expressionManager.expressions) {
        this.expressions.push({ name: e.expressionName, key: normName(e.expressionName) });
      }
    }
    this.headBone = this.vrm?.humanoid?.getNormalizedBoneNode('head') || null;
    if (!this.headBone) {
      scene.traverse((o) => { if (!this.headBone && o.isBone && /head/i.test(o.name)) this.headBone = o; });
    }
    this.headRest = this.headBone ? this.headBone.quaternion.clone() : null;
    // Frame on the head (bone or the whole bounding box), centre the pivot there.
    const box = new THREE.Box3().setFromObject(scene);
    const centre = box.getCenter(new THREE.Vector3());
    let size = box.getSize(new THREE.Vector3()).length();
    if (this.headBone) {
      this.headBone.getWorldPosition(centre);
      size = Math.min(size, 0.45 * (box.max.y - box.min.y) || size);
      centre.y += 0.08 * size;
    }
    scene.position.sub(centre);
    this.size = size;
    this._matched = null;
  }

  /** Which stream channels drive something: {morphs: n, names: [...]} once a frame was seen. */
  summary() {
    return { label: this.label, vrm: !!this.vrm, morphTargets: this.morphs.length,
             expressions: this.expressions.length, matched: this._matched ? [...this._matched] : [],
             headBone: this.headBone ? this.headBone.name || 'head' : null };
  }

  /** Drive with one face; hello gives the name orders. */
  apply(face, hello) {
    const table = new Map();
    if (face.arkit) hello.arkit_names.forEach((n, i) => table.set(normName(n), face.arkit[i]));
    hello.blendshape_names.forEach((n, i) => table.set(normName(n), face.blendshapes[i]));
    const matched = new Set();
    for (const m of this.morphs) {
      const w = table.get(m.key);
      if (w !== undefined) { m.mesh.morphTargetInfluences[m.index] = w; matched.add(m.key); }
    }
    if (this.vrm && this.vrm.expressionManager) {
      const em = this.vrm.expressionManager;
      let perfectSync = false;
      for (const e of this.expressions) {
        const w = table.get(e.key);
        if (w !== undefined) { em.setValue(e.name, w); matched.add(e.key); perfectSync = true; }
      }
      if (!perfectSync) {
        for (const e of this.expressions) {
          const src = VRM_PRESETS[e.key];
          if (!src || !face.arkit) continue;
          const w = src.reduce((s, n) => s + table.get(normName(n)), 0) / src.length;
          em.setValue(e.name, w);
          matched.add(e.key);
        }
      }
    }
    this._matched = matched;
    const q = face.pose.q;   // (w, x, y, z), model axes = avatar axes (+z forward, +x its left)
    const rot = new THREE.Quaternion(q[1], q[2], q[3], q[0]);
    if (this.headBone) {
      // rot is in avatar space; conjugate it into the head's parent frame (handles VRM 0.x's
      // 180-degree turn and arbitrary bone axes): local = parentRel^-1 * rot * parentRel * rest
      const parent = new THREE.Quaternion();
      if (this.headBone.parent) this.headBone.parent.getWorldQuaternion(parent);
      const rootQ = new THREE.Quaternion();
      this.pivot.getWorldQuaternion(rootQ);
      const local = rootQ.clone().invert().multiply(parent);  // parent relative to the avatar
      this.headBone.quaternion.copy(local.clone().invert().multiply(rot).multiply(local).multiply(this.headRest));
    } else {
      this.pivot.quaternion.copy(rot);
    }
  }

  update(dt) { if (this.vrm) this.vrm.update(dt); }
}

/** Load a .glb / .vrm / self-contained .gltf from a File, ArrayBuffer or URL. */
export async function loadAvatar(source) {
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  let gltf, label;
  if (typeof source === 'string') {
    gltf = await loader.loadAsync(source);
    label = source.split('/').pop();
  } else {
    const buf = source instanceof ArrayBuffer ? source : await source.arrayBuffer();
    gltf = await loader.parseAsync(buf, '');
    label = source.name || 'avatar';
  }
  return new Avatar(gltf, label);
}
