// node:cluster code with a namespace import, CommonJS with esModuleInterop (see interop.ts for how it is compiled).
import * as ns from 'cluster-under-test';

const w: ns.Worker = ns.default.fork();
if (w instanceof ns.Worker) w.send('hello');
const settings: ns.ClusterSettings = ns.default.settings;
ns.default.on('listening', (worker: ns.Worker, address: ns.Address) => void [worker.id, address.port]);
void settings;
