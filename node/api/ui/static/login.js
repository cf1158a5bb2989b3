// The sign-in: the token goes to POST /ui/login in a form body, never in an address;
// the agent answers with a cookie for reads. The tab keeps the token for writes and
// for the other agents, which have cookies of their own.
'use strict';

document.getElementById('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = document.getElementById('token').value.trim();
  const err = document.getElementById('err');
  err.textContent = '';
  let resp;
  try {
    resp = await fetch('login', { method: 'POST', body: new URLSearchParams({ token }), credentials: 'same-origin' });
  } catch (e) {
    err.textContent = 'The agent does not answer: ' + e.message;
    return;
  }
  if (resp.ok) {
    sessionStorage.setItem('discluster.token', token);
    location.replace('./');
    return;
  }
  let msg = 'HTTP ' + resp.status;
  try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
  err.textContent = msg;
});
