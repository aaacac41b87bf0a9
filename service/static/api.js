// api.js: requests to this service (relative URLs, so a proxy prefix works) and the bearer-token prompt.
const TOKEN_KEY = "lstm-api-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(`${status}: ${message}`);
    this.status = status;
  }
}

async function send(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText);
  return data;
}

/** Reading and inference: open to everyone. */
export function get(path) {
  return send("GET", path);
}

export function post(path, body) {
  return send("POST", path, body);
}

/** A management request: sent with the saved token, if any; a 401 (or 403 to a token) asks for one and retries. */
export async function admin(method, path, body) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    try {
      return await send(method, path, body, token);
    } catch (error) {
      const wrongToken = error.status === 403 && token;
      if (!(error instanceof ApiError) || !(error.status === 401 || wrongToken)) throw error;
      sessionStorage.removeItem(TOKEN_KEY);
      const entered = await askToken(wrongToken ? "That token was refused; try another." : "This service needs its API token for that.");
      if (!entered) throw error;
      sessionStorage.setItem(TOKEN_KEY, entered);
    }
  }
}

function askToken(message) {
  const box = document.getElementById("token-box");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-message").textContent = message;
  box.hidden = false;
  input.value = "";
  input.focus();
  return new Promise((resolve) => {
    const done = (value) => {
      box.hidden = true;
      form.removeEventListener("submit", onSubmit);
      document.getElementById("token-cancel").removeEventListener("click", onCancel);
      resolve(value);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      done(input.value.trim() || null);
    };
    const onCancel = () => done(null);
    form.addEventListener("submit", onSubmit);
    document.getElementById("token-cancel").addEventListener("click", onCancel);
  });
}
