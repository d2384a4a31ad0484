#!/usr/bin/env node
'use strict';
// rcluster CLI: runs an app that knows nothing of clustering on N workers, in
// the foreground, and controls it from another shell (see lib/cli/options.js USAGE).
//
//   rcluster [options] app [args…]        rcluster [options] ecosystem.config.js
//   rcluster ls | status NAME | reload NAME | scale NAME N | stop NAME
//
// A command only when the first argument is exactly a command word; `start`
// runs an app named like one (`rcluster start stop`), as does `./stop`.

const { USAGE, UsageError, parseFlags, resolveApp, defaultName } = require('../lib/cli/options');

const argv = process.argv.slice(2);

function fail(message, code = 2) {
  process.stderr.write(`rcluster: ${message}\n`);
  process.exit(code);
}

function startApps(args) {
  const { opts, rest } = parseFlags(args);
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (opts.version) {
    process.stdout.write(`${require('../package.json').version}\n`);
    process.exit(0);
  }
  if (rest.length === 0) {
    process.stderr.write(`rcluster: no app to run\n\n${USAGE}\n`);
    process.exit(2);
  }
  const say = opts.quiet ? () => {} : (line) => process.stderr.write(`[rcluster] ${line}\n`);
  const ecosystem = require('../lib/cli/ecosystem');
  if (ecosystem.isEcosystemFile(rest[0])) {
    // Each app's arguments are its `args`: anything after the file would be lost.
    if (rest.length > 1) fail(`unexpected argument ${JSON.stringify(rest[1])} after the ecosystem file`);
    const baseFlags = args.slice(0, args.length - rest.length).filter((a) => a !== '--');
    const apps = ecosystem.appsOf(rest[0], { baseFlags, warn: (line) => process.stderr.write(`rcluster: ${line}\n`) });
    require('../lib/cli/fleet').runFleet(apps, { say });
    return;
  }
  opts.app = resolveApp(rest[0]);
  opts.args = rest.slice(1);
  opts.name = opts.name || defaultName(opts.app);
  require('../lib/cli/run').run(opts, { say, fatal: fail1 }).catch((err) => fail1(err.stack || err.message));
}

function fail1(message, code = 1) {
  fail(message, code);
}

function main() {
  const { COMMANDS, runCommand, CommandError } = require('../lib/cli/commands');
  const { settled } = require('../lib/cli/logs');
  const first = argv[0];
  try {
    if (first === 'start') return startApps(argv.slice(1));
    if (COMMANDS.includes(first)) {
      // A reader that went away (`rcluster status api --watch | head`): done, not a crash.
      process.stdout.on('error', (err) => {
        if (err.code === 'EPIPE') process.exit(0);
        throw err;
      });
      runCommand(first, argv.slice(1)).then(async () => {
        // A long answer (status --json of many workers) to a pipe may still be on its way.
        await settled();
        process.exit(0);
      }, (err) => {
        if (err instanceof UsageError) fail(err.message, 2);
        if (err instanceof CommandError) fail(err.message, 1);
        fail(err.stack || err.message, 1);
      });
      return undefined;
    }
    // A bare word that is neither a command nor a file: most likely a mistyped command.
    if (first && /^[a-z]+$/.test(first)) {
      try {
        resolveApp(first);
      } catch (err) {
        fail(`${err.message}, and no such command (${COMMANDS.join(', ')}, start)`);
      }
    }
    return startApps(argv);
  } catch (err) {
    if (err instanceof UsageError) fail(err.message, 2);
    throw err;
  }
}

main();
