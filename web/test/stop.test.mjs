// Stop strings across pieces (runtime/stream.py's StopFilter, ported).
import assert from "node:assert/strict";
import { test } from "node:test";
import { StopFilter } from "../src/stop.mjs";

test("a stop string split over pieces stops, and the text ends before it", () => {
  const filter = new StopFilter(["\n\n"]);
  assert.equal(filter.push("Hello"), "Hello");
  assert.equal(filter.push(" world\n"), " world"); // "\n" may begin the stop string: held
  assert.equal(filter.push("\nmore"), "");
  assert.ok(filter.stopped);
  assert.equal(filter.text, "Hello world");
  assert.equal(filter.push("after"), "");
});

test("held-back text is released when it cannot begin a stop string any more", () => {
  const filter = new StopFilter(["END", "\n\n"]);
  assert.equal(filter.push("the E"), "the ");
  assert.equal(filter.push("N"), "");
  assert.equal(filter.push("D"), "");
  assert.ok(filter.stopped);
  const other = new StopFilter(["END"]);
  assert.equal(other.push("EN"), "");
  assert.equal(other.push("ds"), "ENds");
  assert.equal(other.push("E"), "");
  assert.equal(other.flush(), "E");
  assert.equal(other.text, "ENdsE");
  assert.ok(!other.stopped);
});

test("the earliest of several stop strings wins, and no stops let everything through", () => {
  const filter = new StopFilter(["b", "cd"]);
  assert.equal(filter.push("acdb"), "a");
  const none = new StopFilter([]);
  assert.equal(none.push("any\n\ntext"), "any\n\ntext");
});
