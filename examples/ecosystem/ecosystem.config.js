// A PM2 ecosystem file, run as is: `rcluster examples/ecosystem/ecosystem.config.js`.
// Each app gets its own foreground supervisor and control socket
// (`rcluster status api`, `rcluster reload web`…). Keys rcluster does not
// support are warned about once; docs/MIGRATING.md maps every PM2 key.
module.exports = {
  apps: [
    {
      name: 'api',
      script: 'app.js',
      instances: 'max',
      exec_mode: 'cluster',
      env: { PORT: 3000, APP_NAME: 'api' },
      max_memory_restart: '512M',
      kill_timeout: 5000,
      listen_timeout: 10000,
      exp_backoff_restart_delay: 100,
      max_restarts: 10,
      min_uptime: '5s',
    },
    {
      name: 'web',
      script: 'app.js',
      instances: 2,
      exec_mode: 'cluster',
      env: { PORT: 3001, APP_NAME: 'web' },
      node_args: '--max-old-space-size=512',
      log_type: 'json',
    },
  ],
};
