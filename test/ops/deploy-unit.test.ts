import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pkg from '../../package.json';

const ROOT = join(__dirname, '..', '..');

/**
 * What runs in production is not `npm start` but node itself (deploy/ and docs/deploy.md): its
 * flags and malloc settings must be package.json's, or the memory bounds the suite measures
 * with them (under-attack, upload-bounds) do not hold there.
 */
describe('the systemd unit and the deploy guide run node as `npm start` does', () => {
  const unit = readFileSync(join(ROOT, 'deploy', 'user-service.service'), 'utf8');
  const guide = readFileSync(join(ROOT, 'docs', 'deploy.md'), 'utf8');

  it("passes package.json's config.node_flags", () => {
    expect(unit).to.match(
      new RegExp(`^ExecStart=/usr/bin/node ${pkg.config.node_flags} \\S+/dist/src/server\\.js$`, 'm'),
    );
    expect(guide).to.include(`node ${pkg.config.node_flags} dist/src/server.js`);
  });

  it("sets package.json's config.malloc_env", () => {
    for (const kv of pkg.config.malloc_env.split(' ')) {
      expect(unit).to.match(new RegExp(`^Environment=${kv}$`, 'm'));
      expect(guide).to.include(kv);
    }
  });
});
