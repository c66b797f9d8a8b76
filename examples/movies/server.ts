// A small movie service on loopback. GET /movies/13 hangs on purpose, to show a deadline.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { deadlineMiddleware } from '../../src/server/index.js';
import type { Movie } from './service.js';

const catalogue: Movie[] = [
  { id: 1, title: 'Heat', year: 1995 },
  { id: 7, title: 'Ronin', year: 1998 },
  { id: 9, title: 'Collateral', year: 2004 },
];
const ratings = new Map<number, number[]>();

export async function startMovieService(): Promise<{ url: string; server: Server }> {
  const deadlines = deadlineMiddleware({ maxMs: 5000 });
  const server = createServer((request, response) => {
    deadlines(request, response, () => {
      const url = new URL(request.url ?? '/', 'http://localhost');
      const send = (status: number, value: unknown) => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(value));
      };
      const byId = /^\/movies\/(\d+)(\/ratings)?$/.exec(url.pathname);
      if (request.method === 'GET' && url.pathname === '/movies') {
        const q = (url.searchParams.get('q') ?? '').toLowerCase();
        send(
          200,
          catalogue.filter((movie) => movie.title.toLowerCase().includes(q)),
        );
      } else if (request.method === 'GET' && byId && !byId[2]) {
        if (byId[1] === '13') return; // never answers
        const movie = catalogue.find((candidate) => candidate.id === Number(byId[1]));
        movie ? send(200, movie) : send(404, { error: 'no such movie' });
      } else if (request.method === 'POST' && byId?.[2]) {
        let body = '';
        request.on('data', (chunk) => {
          body += chunk;
        });
        request.on('end', () => {
          const list = ratings.get(Number(byId[1])) ?? [];
          list.push((JSON.parse(body) as { stars: number }).stars);
          ratings.set(Number(byId[1]), list);
          send(200, { ok: true, average: list.reduce((sum, stars) => sum + stars, 0) / list.length });
        });
      } else {
        send(404, { error: 'not found' });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}
