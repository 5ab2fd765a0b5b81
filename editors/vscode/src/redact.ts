// Keeps tokens out of the output channel. Pure: no `vscode` import.

/**
 * Replaces secrets in a log line: the given exact values (the tokens the
 * extension knows), JSON `"token": "…"` members and `Bearer …` credentials.
 */
export function redact(text: string, secrets: readonly (string | undefined)[] = []): string {
  let out = text;
  for (const s of secrets) {
    if (s && s.length >= 4) out = out.split(s).join('***');
  }
  out = out.replace(/("token"\s*:\s*")((?:[^"\\]|\\.)*)(")/g, (_m, a: string, v: string, b: string) =>
    v === '' ? a + b : a + '***' + b,
  );
  out = out.replace(/(\bBearer\s+)[A-Za-z0-9._~+/=-]+/gi, '$1***');
  return out;
}
