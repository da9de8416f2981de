// @ts-check
/**
 * Assistant text as safe HTML: markdown rendered by `marked`, then sanitised by
 * DOMPurify (both from npm, copied to `/static/vendor/` by `npm ci` and into the
 * wheel at build). Raw HTML in the model's text is shown as text, never as markup,
 * and links open in a new tab. Without the vendored files (a checkout with no
 * `npm ci`) text is shown as plain text with its URLs made clickable.
 *
 * @module demo/markdown
 */

import { linkify } from './dom.js';

/** @type {{parse: (text: string) => string, sanitize: (html: string) => string} | null} */
let renderer = null;

/**
 * Load the renderer; resolves (to whether it loaded) either way.
 *
 * @returns {Promise<boolean>} true when markdown is rendered, false for plain text
 * @example
 * await loadMarkdown();
 */
export async function loadMarkdown() {
  try {
    const [{ Marked }, { default: DOMPurify }] = await Promise.all([
      import('/static/vendor/marked.esm.js'), import('/static/vendor/purify.es.mjs')]);
    const marked = new Marked({ gfm: true, breaks: false });
    // The model's own HTML is text: escaped here, and DOMPurify would drop it anyway.
    marked.use({ renderer: { html: (/** @type {{text: string}} */ token) => escape(token.text) } });
    DOMPurify.addHook('afterSanitizeAttributes', (/** @type {Element} */ node) => {
      if (node.tagName === 'A') {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer');
      }
    });
    renderer = {
      parse: (text) => /** @type {string} */ (marked.parse(text, { async: false })),
      sanitize: (html) => DOMPurify.sanitize(html, { USE_PROFILES: { html: true } }),
    };
    return true;
  } catch {
    return false;
  }
}

/**
 * Show `text` in `el`: rendered markdown once {@link loadMarkdown} has loaded, else
 * plain text with clickable URLs.
 *
 * @param {HTMLElement} el the message element
 * @param {string} text markdown from the model
 * @returns {void}
 * @example
 * renderMarkdown(el, '**Acme** (https://acme.com)');
 */
export function renderMarkdown(el, text) {
  if (!renderer) {
    el.replaceChildren(...linkify(text));
    return;
  }
  el.innerHTML = renderer.sanitize(renderer.parse(text).trim());
}

/** @param {string} text @returns {string} */
function escape(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
