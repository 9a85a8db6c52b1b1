export * from './settings.ts';
export * from './soft-settings.ts';
export * from './mix.ts';
export * from './soft.ts';
export * from './mixer.ts';
export * from './row-plan.ts';
export * from './embed-source.ts';
