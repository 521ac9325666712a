// js-drop-noisy: drops events whose reason is in the configured list
// (config {"reasons": [...]}, default DEFAULT_NOISY below) and keeps the rest.
// Built with componentize-js into a component for
// event-collector:filter/event-filter@0.2.0. It decides on the fields the host
// extracts and never parses the event JSON.

import { log } from 'event-collector:filter/host@0.2.0';

// The routine Normal events of a healthy pod's life.
const DEFAULT_NOISY = ['Scheduled', 'Pulling', 'Pulled', 'Created', 'Started', 'Killing', 'SuccessfulCreate', 'SuccessfulDelete'];

let noisy = new Set(DEFAULT_NOISY);

export const filter = {
  // result<_, string>: return normally for ok, throw a string for err.
  init(config) {
    let c;
    try {
      c = JSON.parse(config);
    } catch (e) {
      throw `invalid filter config: ${e}`;
    }
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw 'invalid filter config: not a JSON object';
    for (const k of Object.keys(c)) {
      if (k !== 'reasons') throw `invalid filter config: unknown key "${k}" (only "reasons" is allowed)`;
    }
    if (c.reasons !== undefined) {
      if (!Array.isArray(c.reasons) || !c.reasons.every((r) => typeof r === 'string')) {
        throw 'invalid filter config: "reasons" must be a list of strings';
      }
      noisy = new Set(c.reasons);
    }
    log('info', `dropping ${noisy.size} noisy reason(s)`);
  },

  // result<verdict, string>: the verdict is a { tag } variant.
  process(fields, _event) {
    return noisy.has(fields.reason) ? { tag: 'drop' } : { tag: 'keep' };
  },
};
