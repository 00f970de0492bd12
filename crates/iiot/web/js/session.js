// Who is signed in (docs/security.md). The server answers GET /api/session with the user,
// their role and the session's CSRF token — or `sign_in: true` when users exist and nobody
// signed in — and the page shows a login form then. With nobody set up (on localhost) access is
// anonymous and the page works as before.

const ORDER = { viewer: 0, operator: 1, admin: 2 };

export const session = { user: null, role: null, via: null, csrf: null };

/** Asks the server who we are: true if the API may be used now, false if a login is needed. */
export async function loadSession() {
  const res = await fetch('/api/session', { headers: { accept: 'application/json' } });
  const body = await res.json();
  if (body.sign_in) {
    Object.assign(session, { user: null, role: null, via: null, csrf: null });
    return false;
  }
  Object.assign(session, { user: body.user, role: body.role, via: body.via, csrf: body.csrf_token || null });
  document.body.dataset.role = session.role;
  return true;
}

/** Signs in; throws the server's message on refusal. */
export async function login(username, password) {
  const res = await fetch('/api/login', {
    method: 'POST',
    headers: { accept: 'application/json', 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  Object.assign(session, { user: body.user, role: body.role, via: 'session', csrf: body.csrf_token });
  document.body.dataset.role = session.role;
}

/** Signs out and reloads into the login page. */
export async function logout() {
  // Read the answer whole before the reload, or the browser counts the request aborted.
  await fetch('/api/logout', { method: 'POST', headers: csrfHeaders() })
    .then((res) => res.text())
    .catch(() => {});
  location.reload();
}

/** Whether the signed-in role includes `role`. */
export function can(role) {
  return session.role != null && ORDER[session.role] >= ORDER[role];
}

/** The header a state-changing request of this session carries. */
export function csrfHeaders() {
  return session.csrf ? { 'x-csrf-token': session.csrf } : {};
}

/** Draws the login form into `root`; resolves once signed in. */
export function loginForm(root) {
  return new Promise((resolve) => {
    root.replaceChildren();
    const form = document.createElement('form');
    form.className = 'login card';
    form.dataset.test = 'login';
    form.innerHTML = `
      <h1>Sign in</h1>
      <label>User <input name="username" autocomplete="username" required></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
      <p class="error" data-test="login-error" hidden></p>
      <button class="btn primary" type="submit">Sign in</button>`;
    const error = form.querySelector('.error');
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      try {
        await login(String(data.get('username')), String(data.get('password')));
        resolve();
      } catch (err) {
        error.textContent = err.message;
        error.hidden = false;
      }
    });
    root.append(form);
    form.querySelector('input').focus();
  });
}

/** Shows who is signed in, with a sign-out button, in `el`. */
export function showUser(el) {
  el.replaceChildren();
  if (session.via !== 'session') return;
  const who = document.createElement('span');
  who.dataset.test = 'user';
  who.textContent = `${session.user} · ${session.role}`;
  const out = document.createElement('button');
  out.type = 'button';
  out.className = 'btn';
  out.dataset.test = 'logout';
  out.textContent = 'Sign out';
  out.addEventListener('click', logout);
  el.append(who, out);
}
