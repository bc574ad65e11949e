// Server-sent events read from a fetch() body: the chat and the share-link page both stream
// answers this way (POST, so EventSource cannot be used).
"use strict";
window.parseSSEFrames = function parseSSEFrames(buffer, onEvent) {
  // Calls onEvent(type, data) for each complete frame; returns the unfinished rest.
  let index;
  while ((index = buffer.indexOf("\n\n")) >= 0) {
    const frame = buffer.slice(0, index);
    buffer = buffer.slice(index + 2);
    let type = "message", data = "";
    for (const line of frame.split("\n")) {
      if (line.startsWith("event: ")) type = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (data) onEvent(type, JSON.parse(data));
  }
  return buffer;
};
