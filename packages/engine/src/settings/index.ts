/** Settings: the one table of request settings, their values and checks, and the report of what ran. */
export * from './table.ts';
export * from './values.ts';
export * from './modes.ts';
export * from './report.ts';
