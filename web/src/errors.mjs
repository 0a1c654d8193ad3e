/**
 * The one error type of the browser runtime: a mistake a user can cause (a corrupt download, a
 * setting out of range, a prompt too long), said in one sentence. The page shows its message as
 * it is; anything else that is thrown is a bug and keeps its stack.
 */
export class EdgeError extends Error {
  constructor(message) {
    super(message);
    this.name = "EdgeError";
  }
}

/** A value as a message quotes it: short, on one line, JSON spelling. */
export function shown(value) {
  let text;
  try {
    text = typeof value === "string" ? `'${value}'` : JSON.stringify(value) ?? String(value);
  } catch {
    text = typeof value;
  }
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}
