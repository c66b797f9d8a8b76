/** A seeded PRNG (mulberry32) so balancer tests are repeatable: the library's own. */
export { seededRandom } from '../../src/testing/random.js';
