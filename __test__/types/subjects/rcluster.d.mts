// The module under test, as rcluster (ESM importers), resolved by package name through package.json.
export * from 'rcluster';
export { default } from 'rcluster';
