// rcluster's own ecosystem file: the CLI's long option names (kebab or camel
// case), plus script, args, cwd, env and nodeArgs.
// Run: `rcluster examples/ecosystem/rcluster.config.js`.
module.exports = {
  apps: [
    {
      name: 'api',
      script: 'app.js',
      instances: 'max',
      restart: true,
      hangTimeout: '5s',
      maxMemory: '512M',
      killTimeout: '5s',
      logFormat: 'json',
      env: { PORT: 3000, APP_NAME: 'api' },
    },
  ],
};
