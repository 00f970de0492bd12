// Entry point: starts the live stream and routes the hash to a page.
//   #/                     overview
//   #/devices?building=…   device list
//   #/device/{id}?range=…  device detail
//   #/silences             the notifier's silences
// A page is a module whose mount(root, params, …) draws into root and returns its cleanup.

import * as overview from './overview.js';
import * as devices from './devices.js';
import * as device from './device.js';
import * as silences from './silences.js';
import * as stream from './stream.js';
import { loadSession, loginForm, showUser } from './session.js';

const view = document.getElementById('view');
let unmount = null;
let mounted = '';

function route() {
  const hash = location.hash || '#/';
  const [path, query = ''] = hash.slice(1).split('?');
  const params = new URLSearchParams(query);
  let page = overview;
  let name = 'overview';
  let arg;
  const detail = /^\/device\/(.+)$/.exec(path);
  if (detail) {
    page = device;
    name = 'device';
    arg = decodeURIComponent(detail[1]);
  } else if (path.startsWith('/devices')) {
    page = devices;
    name = 'devices';
  } else if (path.startsWith('/silences')) {
    page = silences;
    name = 'silences';
  }
  const key = `${name}:${arg || ''}`;
  // Pages keep their own query in the URL with replaceState; only a new page re-mounts.
  if (key === mounted) return;
  mounted = key;
  if (unmount) unmount();
  view.replaceChildren();
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === (name === 'device' ? 'devices' : name));
  }
  document.title = `${arg || name[0].toUpperCase() + name.slice(1)} · Industrial IoT Monitor`;
  unmount = page.mount(view, params, arg);
  view.dataset.page = name;
  window.scrollTo(0, 0);
}

// Signed in (or anonymous where nobody is set up) before anything asks the API.
if (!(await loadSession())) {
  await loginForm(view);
  view.replaceChildren();
}
showUser(document.getElementById('who'));
stream.startStream({ batchMs: 100 });
window.addEventListener('hashchange', route);
route();

// For the browser tests and for curious operators: the stream's state and the reconnect hooks.
window.iiot = { live: stream.live, drop: stream.drop };
