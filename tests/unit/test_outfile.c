/* core/outfile and core/outdir: where an output lands (files, links,
 * FIFOs), publishing without replacing, inputs no output may touch, and
 * the temporaries of writers that are gone. Runs in a scratch directory
 * given as argv[1]. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/outdir.h"
#include "core/outfile.h"
#include "core/path.h"

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static int holds(const char *path, const char *text)
{
	char buf[256] = {0};
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	if (f)
		fclose(f);
	return f && n == strlen(text) && memcmp(buf, text, n) == 0;
}

static int is_link(const char *p)
{
	struct stat sb;
	return lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode);
}

static int exists(const char *p)
{
	struct stat sb;
	return lstat(p, &sb) == 0;
}

/* Temporaries of the output name in dir. */
static int count(const char *dir, const char *name)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "ls -A %s | grep -c '^\\.%s\\.lora-tmp\\.'", dir, name);
	FILE *p = popen(cmd, "r");
	int n = -1;
	if (p && fscanf(p, "%d", &n) != 1)
		n = -1;
	if (p)
		pclose(p);
	return n;
}

static int write_file(const char *path, int flags, const char *text, lora_err *e)
{
	lora_outfile o;
	int rc = lora_outfile_open(&o, path, flags, e);
	if (rc)
		return rc;
	fputs(text, o.fp);
	return lora_outfile_commit(&o, e);
}

/* A pid no process has: a child that has been reaped. */
static pid_t dead_pid(void)
{
	pid_t p = fork();
	if (p == 0)
		_exit(0);
	waitpid(p, NULL, 0);
	return p;
}

static void test_temp_name(void)
{
	char want[64];
	snprintf(want, sizeof want, "a/.b.lora-tmp.%ld.XXXXXX", (long)getpid());
	char *p = lora_path_temp("a/b");
	CHECK(p && strcmp(p, want) == 0, "temp name %s", p);
	free(p);
}

static void test_files(void)
{
	lora_err e = {0};
	CHECK(write_file("f1", 0, "one", &e) == 0 && holds("f1", "one"), "new file: %s", e.msg);
	CHECK(write_file("f1", 0, "two", &e) == LORA_EINVAL && holds("f1", "one"), "existing kept");
	CHECK(strcmp(e.msg, "f1: already exists (use -f to overwrite)") == 0, "%s", e.msg);
	CHECK(write_file("f1", LORA_OUT_FORCE, "two", &e) == 0 && holds("f1", "two"), "-f replaces");

	/* two writers: both open while the name is free, exactly one publishes */
	lora_outfile a, b;
	CHECK(lora_outfile_open(&a, "race", 0, &e) == 0 && lora_outfile_open(&b, "race", 0, &e) == 0, "both open");
	fputs("a", a.fp);
	fputs("b", b.fp);
	CHECK(lora_outfile_commit(&a, &e) == 0, "first wins");
	CHECK(lora_outfile_commit(&b, &e) == LORA_EINVAL && strcmp(e.msg, "race: already exists (use -f to overwrite)") == 0,
	      "second refused: %s", e.msg);
	CHECK(holds("race", "a") && count(".", "race") == 0, "the winner's bytes, no temporary left");

	/* a link is followed: its target is replaced beside it, the link stays */
	mkdir("d", 0777);
	put("d/target", "old");
	symlink("d/target", "link");
	CHECK(write_file("link", 0, "new", &e) == LORA_EINVAL && holds("d/target", "old"), "link needs -f");
	CHECK(write_file("link", LORA_OUT_FORCE, "new", &e) == 0, "through the link: %s", e.msg);
	CHECK(is_link("link") && holds("d/target", "new") && count("d", "target") == 0, "target replaced, link kept");
	/* a link to nowhere: taken without -f; with -f its target is made */
	symlink("d/none", "dangling");
	CHECK(write_file("dangling", 0, "x", &e) == LORA_EINVAL && !exists("d/none"), "dangling needs -f");
	CHECK(write_file("dangling", LORA_OUT_FORCE, "x", &e) == 0 && is_link("dangling") && holds("d/none", "x"),
	      "dangling -f: %s", e.msg);
	symlink("loop", "loop");
	CHECK(write_file("loop", LORA_OUT_FORCE, "x", &e) == LORA_EIO &&
	      strcmp(e.msg, "loop: Too many levels of symbolic links") == 0, "loop: %s", e.msg);
	CHECK(write_file("d", LORA_OUT_FORCE, "x", &e) == LORA_EINVAL && strcmp(e.msg, "d: is a directory") == 0,
	      "directory: %s", e.msg);

	/* a FIFO is written into, without -f and without a temporary */
	mkfifo("fifo", 0666);
	int rd = open("fifo", O_RDONLY | O_NONBLOCK);
	CHECK(rd >= 0 && write_file("fifo", 0, "streamed", &e) == 0, "fifo: %s", e.msg);
	char buf[16] = {0};
	CHECK(read(rd, buf, sizeof buf) == 8 && strcmp(buf, "streamed") == 0, "fifo got '%s'", buf);
	close(rd);
	struct stat sb;
	CHECK(lstat("fifo", &sb) == 0 && S_ISFIFO(sb.st_mode) && count(".", "fifo") == 0, "fifo kept");
	/* a link to a FIFO too */
	symlink("fifo", "fifolink");
	rd = open("fifo", O_RDONLY | O_NONBLOCK);
	CHECK(write_file("fifolink", 0, "again", &e) == 0 && read(rd, buf, sizeof buf) == 5, "fifo link: %s", e.msg);
	close(rd);
	CHECK(is_link("fifolink"), "fifo link kept");
}

static void test_inputs(void)
{
	lora_err e = {0};
	mkdir("in", 0777);
	put("in/data", "data");
	put("solo", "solo");
	link("solo", "hard");
	symlink("solo", "soft");
	lora_outfile_input("in");
	lora_outfile_input("solo");
	lora_outfile_input("missing"); /* ignored: it fails where it is read */
	CHECK(write_file("in/new", LORA_OUT_FORCE, "x", &e) == LORA_EUSAGE && !exists("in/new") &&
	      strcmp(e.msg, "in/new: output would be written inside the input in") == 0, "inside: %s", e.msg);
	CHECK(write_file("hard", LORA_OUT_FORCE, "x", &e) == LORA_EUSAGE &&
	      strcmp(e.msg, "hard: output would overwrite the input solo") == 0, "hard link: %s", e.msg);
	CHECK(write_file("soft", LORA_OUT_FORCE, "x", &e) == LORA_EUSAGE && holds("solo", "solo"), "soft link");
	CHECK(lora_outfile_check("in/data", LORA_OUT_FORCE, &e) == LORA_EUSAGE, "check sees it too");
	CHECK(write_file("beside", 0, "x", &e) == 0, "beside an input: %s", e.msg);

	/* a directory replaced with -f may not hold an input */
	mkdir("outer", 0777);
	put("outer/adapter", "a");
	lora_outfile_input("outer/adapter");
	lora_outdir d;
	CHECK(lora_outdir_open(&d, "outer", 1, NULL, &e) == LORA_EUSAGE &&
	      strcmp(e.msg, "outer: output would replace a directory holding the input outer/adapter") == 0,
	      "contain: %s", e.msg);
	CHECK(lora_outdir_open(&d, "in", 1, NULL, &e) == LORA_EUSAGE &&
	      strcmp(e.msg, "in: output would overwrite the input in") == 0, "be: %s", e.msg);
	CHECK(count(".", "outer") == 0 && count(".", "in") == 0, "nothing made");
	lora_outfile_inputs_clear();
	CHECK(write_file("in/new", 0, "x", &e) == 0, "cleared: %s", e.msg);
}

static void test_dirs(void)
{
	lora_err e = {0};
	lora_outdir a, b;
	/* two writers of one directory: exactly one publishes */
	CHECK(lora_outdir_open(&a, "dir", 0, NULL, &e) == 0 && lora_outdir_open(&b, "dir", 0, NULL, &e) == 0, "both open");
	put(lora_outdir_file(&a, "x"), "a");
	put(lora_outdir_file(&b, "x"), "b");
	CHECK(lora_outdir_commit(&a, &e) == 0, "first: %s", e.msg);
	CHECK(lora_outdir_commit(&b, &e) == LORA_EINVAL && strcmp(e.msg, "dir: already exists (use -f to overwrite)") == 0,
	      "second: %s", e.msg);
	CHECK(holds("dir/x", "a") && count(".", "dir") == 0, "winner kept, loser removed");

	/* -f over a directory with subdirectories: replaced whole, nothing hidden */
	mkdir("dir/sub", 0777);
	put("dir/sub/y", "y");
	CHECK(lora_outdir_open(&a, "dir", 1, NULL, &e) == 0, "-f: %s", e.msg);
	CHECK(lora_outdir_mkdir(&a, "s2", &e) == 0, "mkdir: %s", e.msg);
	put(lora_outdir_file(&a, "s2/z"), "z");
	CHECK(lora_outdir_commit(&a, &e) == 0 && holds("dir/s2/z", "z") && !exists("dir/sub") && !exists("dir/x"),
	      "replaced: %s", e.msg);
	CHECK(count(".", "dir") == 0, "nothing hidden left");
	/* but not a subdirectory where only named files may be */
	static const char *const only[] = {"z", NULL};
	CHECK(lora_outdir_open(&a, "dir", 1, only, &e) == LORA_EINVAL, "only files");

	/* abort removes what was made, registered or not */
	CHECK(lora_outdir_open(&a, "gone", 0, NULL, &e) == 0, "open");
	CHECK(lora_outdir_mkdir(&a, "s", &e) == 0, "mkdir");
	char *stray = lora_path_join(a.tmp, "s/unregistered");
	put(stray, "x");
	free(stray);
	lora_outdir_abort(&a, NULL);
	CHECK(count(".", "gone") == 0 && !exists("gone"), "abort leaves nothing");

	/* a link to a directory is followed with -f; the link stays */
	mkdir("real", 0777);
	symlink("real", "dlink");
	CHECK(lora_outdir_open(&a, "dlink", 0, NULL, &e) == LORA_EINVAL, "link needs -f");
	CHECK(lora_outdir_open(&a, "dlink", 1, NULL, &e) == 0, "link -f: %s", e.msg);
	put(lora_outdir_file(&a, "w"), "w");
	CHECK(lora_outdir_commit(&a, &e) == 0 && is_link("dlink") && holds("real/w", "w"), "through: %s", e.msg);
	/* a FIFO is no directory, with or without -f */
	CHECK(lora_outdir_open(&a, "fifo", 1, NULL, &e) == LORA_EINVAL && strcmp(e.msg, "fifo: exists and is not a directory") == 0,
	      "fifo dir: %s", e.msg);
}

static void test_sweep(void)
{
	lora_err e = {0};
	char dead[128], live[128], other[128];
	snprintf(dead, sizeof dead, ".s.lora-tmp.%ld.AbCdEf", (long)dead_pid());
	snprintf(live, sizeof live, ".s.lora-tmp.%ld.AbCdEf", (long)getppid());
	snprintf(other, sizeof other, ".t.lora-tmp.%ld.AbCdEf", (long)dead_pid());
	mkdir(dead, 0777);
	char *inner = lora_path_join(dead, "shard");
	put(inner, "x");
	free(inner);
	put(live, "x");
	put(other, "x");
	put(".s.lora-tmp.junk", "x");
	CHECK(write_file("s", 0, "s", &e) == 0, "write: %s", e.msg);
	CHECK(!exists(dead), "a dead writer's temporary is removed");
	CHECK(exists(live) && exists(other) && exists(".s.lora-tmp.junk"), "a live one's, another output's, no pid: kept");
	/* directory outputs sweep too */
	snprintf(dead, sizeof dead, ".s2.lora-tmp.%ld.AbCdEf.old", (long)dead_pid());
	mkdir(dead, 0777);
	lora_outdir d;
	CHECK(lora_outdir_open(&d, "s2", 0, NULL, &e) == 0 && lora_outdir_commit(&d, &e) == 0, "s2: %s", e.msg);
	CHECK(!exists(dead), "dir sweep");
}

int main(int argc, char **argv)
{
	if (argc != 2 || chdir(argv[1]) != 0) {
		fprintf(stderr, "usage: test_outfile SCRATCH-DIR\n");
		return 2;
	}
	umask(022);
	test_temp_name();
	test_files();
	test_inputs();
	test_dirs();
	test_sweep();
	DONE();
}
