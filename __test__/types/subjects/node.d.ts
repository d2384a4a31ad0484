// The module under test, as node:cluster (CommonJS importers). @types/node declares `node:cluster` the same way.
export * from 'node:cluster';
export { default } from 'node:cluster';
