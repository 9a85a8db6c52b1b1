import * as tf from '@tensorflow/tfjs-core';
import { initBackend, quantizeQ8, SafetensorsFile, Q8_BLOCK } from '@moi/core';
import { loadModel } from '@moi/models';
await initBackend({ backend: 'wasm' });
const dir = '/work/shared/fixtures/stories260K';
const f = SafetensorsFile.open(dir + '/model.safetensors');
const delta = new Map<string, number>();
for (const [name, info] of f.tensors) {
  if (info.shape.length !== 2) continue;
  const [R, C] = info.shape; const x = f.readFloat32(name);
  const { d } = quantizeQ8(x, R, C); const nb = Math.ceil(C / Q8_BLOCK);
  let worst = 0;
  for (let r = 0; r < R; r++) {
    let e2 = 0, w2 = 0;
    for (let b = 0; b < nb; b++) { const n = Math.min(C, (b + 1) * Q8_BLOCK) - b * Q8_BLOCK; e2 += n * (d[r * nb + b] / 2) ** 2; }
    for (let c = 0; c < C; c++) w2 += x[r * C + c] ** 2;
    if (w2 > 0) worst = Math.max(worst, Math.sqrt(e2 / w2));
  }
  delta.set(name, worst); console.log(name, worst.toFixed(4));
}
const m32 = await loadModel(dir); const m8 = await loadModel(dir, { dtype: 'q8' });
const ids = [1, 403, 407, 261, 378];
const a = m32.model.forward({ ids: [ids] }); const b = m8.model.forward({ ids: [ids] });
const A = a.dataSync(), B = b.dataSync();
for (let t = 0; t < 5; t++) { let md = 0, ms = 0; for (let v = 0; v < 512; v++) { md = Math.max(md, Math.abs(A[t*512+v]-B[t*512+v])); ms = Math.max(ms, Math.abs(A[t*512+v])); } console.log(t, md, ms, md/ms); }
