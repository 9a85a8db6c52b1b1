export * from './settings.ts';
export * from './mix.ts';
export * from './mixer.ts';
