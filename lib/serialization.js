'use strict';
// User messages on a worker channel, in Node's two formats. The Rust core
// frames and routes them; encoding and decoding values is JS's job because
// only V8 knows every value a message may hold.

const v8 = require('node:v8');
const wire = require('./v8-wire');

// Host objects travel as Node's child_process serializer writes them: a tag,
// then either the typed-array payload or a plain copy of the object. Workers
// decode with Node's own deserializer, so this layout must match it.
const ARRAY_BUFFER_VIEW = 0;
const NOT_ARRAY_BUFFER_VIEW = 1;

class Serializer extends v8.DefaultSerializer {
  _writeHostObject(object) {
    if (ArrayBuffer.isView(object)) {
      this.writeUint32(ARRAY_BUFFER_VIEW);
      return super._writeHostObject(object);
    }
    this.writeUint32(NOT_ARRAY_BUFFER_VIEW);
    this.writeValue({ ...object });
  }
}

class Deserializer extends v8.DefaultDeserializer {
  _readHostObject() {
    const tag = this.readUint32();
    if (tag === ARRAY_BUFFER_VIEW) return super._readHostObject();
    if (tag !== NOT_ARRAY_BUFFER_VIEW) throw new Error(`unknown host object tag ${tag}`);
    return this.readValue();
  }
}

const json = {
  /** A complete frame (a string: the binding writes its UTF-8). */
  encode(message) {
    return `${JSON.stringify(message)}\n`;
  },
  /** A frame's payload (the line without its newline). */
  decode(payload) {
    return JSON.parse(payload.toString('utf8'));
  },
};

// Plain data goes through v8-wire's JS codec (no native object per
// message); anything else through Node's serializer, as Node sends it.
const advanced = {
  encode(message) {
    const frame = wire.encode(message);
    return frame === wire.UNHANDLED ? nativeEncode(message) : frame;
  },
  decode(payload) {
    const value = wire.decode(payload);
    return value === wire.UNHANDLED ? nativeDecode(payload) : value;
  },
};

// Node's serializer: the fallback, and what the tests hold the JS codec to.
function nativeEncode(message) {
  const ser = new Serializer();
  ser.writeRawBytes(Buffer.alloc(4));
  ser.writeHeader();
  ser.writeValue(message);
  const frame = ser.releaseBuffer();
  frame.writeUInt32BE(frame.length - 4, 0);
  return frame;
}

function nativeDecode(payload) {
  const des = new Deserializer(payload);
  des.readHeader();
  return des.readValue();
}

module.exports = { json, advanced, nativeEncode, nativeDecode };
