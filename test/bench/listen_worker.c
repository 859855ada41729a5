/*
 * listen_worker.c -- L1: pickup latency of an external worker that waits
 * with LISTEN (built and run by test/bench/run).
 *
 *   listen_worker CONNINFO CHANNEL SAMPLES PRODUCE_SQL TAKE_SQL [FINISH_SQL]
 *
 * One process, two connections.  The worker connection LISTENs on CHANNEL.
 * For each sample the producer runs PRODUCE_SQL inside BEGIN (it enqueues
 * a job and calls pg_notify(CHANNEL)); the clock starts when its COMMIT is
 * sent.  The worker sleeps in poll() on its socket until the notification
 * arrives, then runs TAKE_SQL (autocommit: the job is its own once that
 * commits); the clock stops when TAKE_SQL returns a row.  FINISH_SQL, if
 * given, then runs with TAKE_SQL's first two columns as $1 and $2 (the
 * complete() of an at-least-once worker; not timed).  Samples are 20 ms
 * apart, so the system is idle when each job arrives.  Prints "p50 p95" in
 * milliseconds.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void
die(PGconn *conn, const char *what)
{
	fprintf(stderr, "listen_worker: %s: %s", what, conn ? PQerrorMessage(conn) : "\n");
	exit(1);
}

static void
run(PGconn *conn, const char *sql, ExecStatusType expect)
{
	PGresult   *res = PQexec(conn, sql);

	if (PQresultStatus(res) != expect)
		die(conn, sql);
	PQclear(res);
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	PGconn	   *producer;
	PGconn	   *worker;
	char		listen[256];
	int			samples;
	double	   *lat;

	if (argc < 6)
	{
		fprintf(stderr, "usage: %s CONNINFO CHANNEL SAMPLES PRODUCE_SQL TAKE_SQL [FINISH_SQL]\n", argv[0]);
		return 2;
	}
	samples = atoi(argv[3]);
	if (samples < 1)
		return 2;
	lat = calloc(samples, sizeof(double));
	producer = PQconnectdb(argv[1]);
	worker = PQconnectdb(argv[1]);
	if (PQstatus(producer) != CONNECTION_OK)
		die(producer, "connect");
	if (PQstatus(worker) != CONNECTION_OK)
		die(worker, "connect");
	snprintf(listen, sizeof(listen), "LISTEN %s", argv[2]);
	run(worker, listen, PGRES_COMMAND_OK);

	for (int i = 0; i < samples; i++)
	{
		PGresult   *res;
		PGnotify   *n;
		double		t0;
		int			got = 0;

		usleep(20000);
		run(producer, "BEGIN", PGRES_COMMAND_OK);
		run(producer, argv[4], PGRES_TUPLES_OK);
		t0 = now_ms();
		if (!PQsendQuery(producer, "COMMIT"))
			die(producer, "COMMIT");

		while (!got)
		{
			struct pollfd pfd = {PQsocket(worker), POLLIN, 0};

			if (poll(&pfd, 1, 10000) <= 0)
				die(NULL, "no notification within 10 s");
			if (!PQconsumeInput(worker))
				die(worker, "consume");
			while ((n = PQnotifies(worker)) != NULL)
			{
				got = 1;
				PQfreemem(n);
			}
		}
		res = PQexec(worker, argv[5]);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
			die(worker, "take: no job");
		lat[i] = now_ms() - t0;
		if (argc > 6)
		{
			const char *params[2] = {PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1)};
			PGresult   *fin = PQexecParams(worker, argv[6], 2, NULL, params, NULL, NULL, 0);

			if (PQresultStatus(fin) != PGRES_TUPLES_OK)
				die(worker, "finish");
			PQclear(fin);
		}
		PQclear(res);
		while ((res = PQgetResult(producer)) != NULL)
		{
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				die(producer, "COMMIT");
			PQclear(res);
		}
	}
	qsort(lat, samples, sizeof(double), cmp_double);
	printf("%.3f %.3f\n", lat[(samples - 1) / 2], lat[(int) ((samples - 1) * 0.95)]);
	PQfinish(producer);
	PQfinish(worker);
	return 0;
}
