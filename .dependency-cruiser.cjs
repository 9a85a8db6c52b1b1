/**
 * The import rules (`pnpm check:imports`, run in CI): packages import downward only
 * (cli → engine → models, moi → core), @moi/engine pulls in no HTTP, parquet, chart or client
 * library, and no files import each other in a circle.
 */
const pkg = (name) => `^packages/${name}/`;
const below = {
  core: [],
  models: ['core'],
  moi: ['core'],
  engine: ['core', 'models', 'moi'],
  cli: ['core', 'models', 'moi', 'engine'],
};
const all = Object.keys(below);
const upward = all.map((from) => ({
  name: `no-upward-import-from-${from}`,
  comment: `packages/${from} may import only ${below[from].length ? below[from].join(', ') : 'no other package'}`,
  severity: 'error',
  from: { path: `${pkg(from)}(src)/` },
  to: { path: `^packages/(${all.filter((p) => p !== from && !below[from].includes(p)).join('|')})/` },
}));

module.exports = {
  forbidden: [
    ...upward,
    {
      name: 'no-circular',
      comment: 'files must not import each other in a circle',
      severity: 'error',
      from: { path: '^packages/' },
      to: { circular: true },
    },
    {
      name: 'engine-stays-lean',
      comment: '@moi/engine (and what it imports) must not pull in HTTP, parquet, chart, progress or client libraries',
      severity: 'error',
      from: { path: '^packages/(core|models|moi|engine)/src/' },
      to: {
        path: 'node_modules/(\\.pnpm/)?.*(fastify|openai|hyparquet|chart\\.js|prom-client|cli-progress|commander|puppeteer)',
      },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'every import resolves (a package must be a dependency of the importing package)',
      severity: 'error',
      from: { path: '^packages/' },
      to: { couldNotResolve: true },
    },
    {
      name: 'not-to-undeclared',
      comment: "a package imported from src must be in that package's own package.json",
      severity: 'error',
      from: { path: '^packages/[^/]+/src/' },
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(test|dist)/|\\.d\\.ts$' },
    tsPreCompilationDeps: true,
    combinedDependencies: true,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'types', 'default'],
      extensions: ['.ts', '.js'],
    },
  },
};
