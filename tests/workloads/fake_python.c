/*
 * A fake CPython 3.13, as a hostile user could build one: built as an
 * executable named python3.13 with -rdynamic, it exports _PyRuntime (a
 * _Py_DebugOffsets, then one interpreter with this thread's thread state
 * and one frame), PyCode_Type and Py_Version, and burns CPU in that frame
 * for SECONDS (its argument).
 *
 * With -DFAR the code object's filename offset is 2^36; without, offsets
 * are in range but its strings and line table claim lengths of 2^40.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef FAR
#define FILENAME_OFFSET ((uint64_t)1 << 36)
#else
#define FILENAME_OFFSET 40
#endif

/* _Py_DebugOffsets, in the file (bpfscope reads it there), word by word. */
__attribute__((aligned(64))) uint64_t _PyRuntime[512] = {
	[0] = 0x7970677562656478ULL,  /* "xdebugpy" */
	[8 / 8] = 0x030d00f0,         /* version; free-threaded (16) is 0 */
	[40 / 8] = 512,               /* runtime: interpreters.head */
	[64 / 8] = 0,                 /* interp: next */
	[72 / 8] = 8,                 /* interp: threads.head */
	[168 / 8] = 0,                /* tstate: next */
	[184 / 8] = 8,                /* tstate: current_frame */
	[192 / 8] = 16,               /* tstate: thread_id */
	[200 / 8] = 24,               /* tstate: native_thread_id */
	[232 / 8] = 0,                /* frame: previous */
	[240 / 8] = 8,                /* frame: executable */
	[248 / 8] = 16,               /* frame: instr_ptr */
	[264 / 8] = 24,               /* frame: owner */
	[280 / 8] = FILENAME_OFFSET,  /* code: filename */
	[288 / 8] = 16,               /* code: name */
	[296 / 8] = 32,               /* code: qualname */
	[304 / 8] = 48,               /* code: linetable */
	[312 / 8] = 24,               /* code: firstlineno */
	[344 / 8] = 64,               /* code: co_code_adaptive */
};
__attribute__((aligned(64))) unsigned char PyCode_Type[256];
const uint32_t Py_Version = 0x030d00f0;

static unsigned char interp[256], tstate[256], frame[64], code[256];
static unsigned char name_str[2048], qualname_str[2048], filename_str[2048];
static unsigned char line_table[72 * 1024];

static void put(unsigned char *base, size_t at, uint64_t value)
{
	memcpy(base + at, &value, sizeof(value));
}

/* A compact ASCII str (3.13: header of 40 bytes) claiming `length` characters. */
static void str_object(unsigned char *object, const char *text, uint64_t length)
{
	put(object, 16, length);
	uint32_t state = (1u << 2) | (1u << 5) | (1u << 6); /* kind 1, compact, ascii */
	memcpy(object + 32, &state, sizeof(state));
	strcpy((char *)object + 40, text);
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5;
	uint64_t claimed = (uint64_t)1 << 40;

	_PyRuntime[512 / 8] = (uint64_t)(uintptr_t)interp;
	put(interp, 8, (uint64_t)(uintptr_t)tstate);
	put(tstate, 8, (uint64_t)(uintptr_t)frame);
	put(tstate, 16, (uint64_t)pthread_self());
	put(frame, 8, (uint64_t)(uintptr_t)code);
	put(frame, 16, (uint64_t)(uintptr_t)(code + 64));
	put(code, 8, (uint64_t)(uintptr_t)PyCode_Type);
	str_object(name_str, "hostile_fn", 10);
	str_object(qualname_str, "hostile_fn", claimed);
	str_object(filename_str, "hostile.py", claimed);
	put(code, 16, (uint64_t)(uintptr_t)name_str);
	uint32_t firstlineno = 7;
	memcpy(code + 24, &firstlineno, sizeof(firstlineno));
	put(code, 32, (uint64_t)(uintptr_t)qualname_str);
	put(code, 40, (uint64_t)(uintptr_t)filename_str);
	put(code, 48, (uint64_t)(uintptr_t)line_table);
	put(line_table, 16, claimed);

	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	volatile uint64_t spin = 0;
	do {
		for (int i = 0; i < 1000000; i++)
			spin += i;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
	return 0;
}
