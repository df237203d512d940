/**
 * Names inside an upload: which entries are never data (hidden files, macOS resource forks,
 * Windows thumbnails, at any depth), and error messages that stay recordable in Postgres whatever
 * bytes an archive's names carry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DatasetIngestError, printable } from '../../../runner/datasets/errors.js';
import { isJunkPath } from '../../../runner/datasets/formats/context.js';

test('junk paths: hidden files and folders, __MACOSX, Thumbs.db at any depth; data paths are kept', () => {
  for (const junk of ['.DS_Store', 'cats/.hidden.png', '.git/config', '__MACOSX/cats/._a.png', 'train/__MACOSX/x.png', 'dogs/Thumbs.db', 'a/.b/c.png']) {
    assert.equal(isJunkPath(junk), true, junk);
  }
  for (const data of ['cats/a.png', 'train/dogs/b.jpg', 'a.b/c.png', 'MACOSX/a.png', 'thumbs.db.png', 'x/Thumbs.dbx']) {
    assert.equal(isJunkPath(data), false, data);
  }
});

test('printable: control bytes (NUL included) become \\xNN escapes; tabs, newlines and non-ASCII letters stay', () => {
  assert.equal(printable('a\u0000b\u001fc\u007fd'), 'a\\x00b\\x1fc\\x7fd');
  assert.equal(printable('tab\there\nnew line · é 猫'), 'tab\there\nnew line · é 猫');
});

test('an ingest error names its file first, escaped, and keeps its kind', () => {
  const err = new DatasetIngestError('undecodable_image', 'not an image', 'cats/\u0000evil.png');
  assert.equal(err.message, 'cats/\\x00evil.png: not an image');
  assert.equal(err.file, 'cats/\\x00evil.png');
  assert.equal(err.kind, 'undecodable_image');
  assert.equal(err.name, 'DatasetIngestError');
  assert.equal(new DatasetIngestError('no_examples', 'nothing to train on').message, 'nothing to train on');
});
