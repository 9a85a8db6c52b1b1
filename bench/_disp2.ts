import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
await tf.setBackend('wasm'); await tf.ready();
const x = tf.randomNormal([1, 1728]);
const t = (name: string, f: () => void) => { for (let i = 0; i < 200; i++) f(); const n = 5000; const s = process.hrtime.bigint(); for (let i = 0; i < n; i++) f(); console.log(name, (Number(process.hrtime.bigint() - s) / n / 1000).toFixed(2), 'µs'); };
t('reshape', () => tf.tidy(() => { tf.reshape(x, [1, 27, 64]); }));
t('reshape no tidy', () => { tf.reshape(x, [1, 27, 64]).dispose(); });
t('split3', () => tf.tidy(() => { tf.split(x, [576, 576, 576], 1); }));
