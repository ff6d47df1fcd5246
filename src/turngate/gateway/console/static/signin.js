// The sign-in form: the gateway token is sent once; the gateway answers with the console's
// cookie (HttpOnly: this script never sees it), and the same address then serves the console.

const form = document.getElementById('signin-form');
const input = document.getElementById('signin-token');
const error = document.getElementById('signin-error');
const button = document.getElementById('signin-submit');

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.hidden = true;
  if (!input.value) {
    error.textContent = 'Enter the gateway token.';
    error.hidden = false;
    input.focus();
    return;
  }
  button.disabled = true;
  try {
    const response = await fetch('/console/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token: input.value }),
      cache: 'no-store',
    });
    if (response.ok) {
      // The same address now serves the console (the cookie is set): load it again.
      window.location.reload();
      return;
    }
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch {
      // keep the status line
    }
    error.textContent = response.status === 401 ? 'That is not this gateway’s token.' : message;
    error.hidden = false;
    input.select();
  } catch (failure) {
    error.textContent = `Could not reach the gateway: ${failure.message ?? failure}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
