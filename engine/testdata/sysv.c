/* sysv: System V IPC for the engine tests. argv[1]: directory.
 * Creates (after creating and removing a few objects, so that the ids are
 * not the first ones) a 3-page segment with key 0x1234, attached, holding a
 * pattern in its first two pages; a queue (key 0x4321) with three messages;
 * a set of three semaphores (key 0x5555) with values 3 0 7.
 * <dir>/ids: "<shmid> <msqid> <semid> <address>". Then it counts, storing the
 * count in the segment's third page and rewriting "<count> <pattern ok>" at
 * offset 0 of <dir>/count every millisecond. Once <dir>/go exists it looks
 * the objects up by key, takes the messages and the semaphore values and
 * writes "<shmid> <msqid> <semid>|<type>:<text> ...|<v0> <v1> <v2>" to
 * <dir>/result.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#define SZ (3 * 4096)

struct msg {
	long type;
	char text[64];
};

int main(int argc, char **argv) {
	char path[512], line[512];
	for (int i = 0; i < 3; i++) {
		shmctl(shmget(IPC_PRIVATE, 4096, 0600), IPC_RMID, NULL);
		msgctl(msgget(IPC_PRIVATE, 0600), IPC_RMID, NULL);
		semctl(semget(IPC_PRIVATE, 1, 0600), 0, IPC_RMID);
	}
	int shm = shmget(0x1234, SZ, IPC_CREAT | 0640);
	unsigned char *p = shmat(shm, NULL, 0);
	if (shm < 0 || p == (void *)-1)
		return 1;
	for (int i = 0; i < 2 * 4096; i++)
		p[i] = (i * 13 + 7) & 0xff;
	int q = msgget(0x4321, IPC_CREAT | 0600);
	const char *texts[] = {"msg-one", "msg-two", "msg-three"};
	for (int i = 0; i < 3; i++) {
		struct msg m = {.type = i + 1};
		strcpy(m.text, texts[i]);
		if (msgsnd(q, &m, strlen(texts[i]) + 1, 0))
			return 2;
	}
	int s = semget(0x5555, 3, IPC_CREAT | 0600);
	unsigned short vals[3] = {3, 0, 7};
	if (semctl(s, 0, SETALL, vals))
		return 3;
	snprintf(path, sizeof path, "%s/ids", argv[1]);
	FILE *f = fopen(path, "w");
	fprintf(f, "%d %d %d %lu\n", shm, q, s, (unsigned long)p);
	fclose(f);
	snprintf(path, sizeof path, "%s/count", argv[1]);
	int out = open(path, O_WRONLY | O_CREAT, 0644);
	volatile long *count = (long *)(p + 2 * 4096);
	for (;;) {
		int ok = 1;
		for (int i = 0; i < 2 * 4096; i++)
			ok &= p[i] == ((i * 13 + 7) & 0xff);
		(*count)++;
		int len = snprintf(line, sizeof line, "%020ld %d\n", *count, ok);
		pwrite(out, line, len, 0);
		snprintf(path, sizeof path, "%s/go", argv[1]);
		if (access(path, F_OK) == 0)
			break;
		usleep(1000);
	}
	int n = snprintf(line, sizeof line, "%d %d %d|", shmget(0x1234, 0, 0), msgget(0x4321, 0), semget(0x5555, 0, 0));
	struct msg m;
	ssize_t r;
	while ((r = msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT)) >= 0)
		n += snprintf(line + n, sizeof line - n, "%ld:%s ", m.type, m.text);
	semctl(s, 0, GETALL, vals);
	n += snprintf(line + n, sizeof line - n, "|%d %d %d\n", vals[0], vals[1], vals[2]);
	snprintf(path, sizeof path, "%s/result.tmp", argv[1]);
	f = fopen(path, "w");
	fputs(line, f);
	fclose(f);
	char final[512];
	snprintf(final, sizeof final, "%s/result", argv[1]);
	rename(path, final);
	for (;;)
		pause();
}
