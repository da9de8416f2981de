// @ts-check
/**
 * toolplex's JS client under the package's other entry name: the same exports as
 * `toolplex.js`, the documented entry point (one list of names, kept there).
 *
 * @module index
 */

export * from './toolplex.js';
