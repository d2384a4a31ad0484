// The module under test, as rcluster (CommonJS importers), resolved by package name through package.json.
import cluster = require('rcluster');
export = cluster;
