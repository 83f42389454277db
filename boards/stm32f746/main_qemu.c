/*
 * main_qemu.c - emulation harness for the STM32F746: the model under QEMU
 * mps2-an500 (a Cortex-M7 with code at 0x0 and RAM at 0x20000000), with
 * file I/O on the host through semihosting.
 *
 *     qemu-system-arm -M mps2-an500 -nographic -monitor none -serial none \
 *         -semihosting-config enable=on,target=native,arg=fw,arg=IN,arg=OUT,arg=STATS \
 *         -kernel fw-qemu.elf
 *
 * IN holds N int8 inputs of HYDRA_MODEL_INPUT_BYTES each, concatenated; the
 * model runs on each in turn and OUT receives the N outputs. STATS receives
 * "stack_used_bytes U" and "stack_reserved_bytes R" (the painted stack's
 * high-water mark). Without args the names are in.bin, out.bin and
 * stats.txt in QEMU's working directory. Diagnostics go to the host's
 * stderr. The exit code (SYS_EXIT_EXTENDED) is one of hydra_board.h.
 *
 * Test builds: -DHYDRA_PLANT_FAULT reads an unmapped address before running
 * (a BusFault), -DHYDRA_PLANT_HANG spins forever (a hang for the timeout).
 */
#include <stdint.h>
#include <string.h>

#include "hydra_board.h"
#include "model.h"
#include "semihost.h"

#ifndef HYDRA_PLANT_FAULT_ADDR
#define HYDRA_PLANT_FAULT_ADDR 0xF0000000u /* nothing is mapped there on mps2-an500 (or on the STM32F746) */
#endif

#define MAX_ARGS 4

static int8_t input[HYDRA_MODEL_INPUT_BYTES] __attribute__((aligned(8)));
static int8_t output[HYDRA_MODEL_OUTPUT_BYTES] __attribute__((aligned(8)));
static char cmdline[512];
static int32_t stderr_handle = -1;
static const char *stats_name = "stats.txt";

static void say(const char *s)
{
    if (stderr_handle < 0) {
        stderr_handle = sh_open(":tt", SH_MODE_A);
    }
    if (stderr_handle >= 0) {
        (void)sh_write(stderr_handle, s, (uint32_t)strlen(s));
    }
}

static const char *fmt_u32(uint32_t v, int hex)
{
    static char buf[12];
    char *p = buf + sizeof buf - 1;
    const uint32_t base = hex ? 16u : 10u;
    *p = '\0';
    do {
        *--p = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0);
    if (hex) {
        *--p = 'x';
        *--p = '0';
    }
    return p;
}

static void write_stats(void)
{
    int32_t h = sh_open(stats_name, SH_MODE_WB);
    if (h < 0) {
        return;
    }
    const char *lines[] = {"stack_used_bytes ", fmt_u32(hydra_stack_used(), 0), "\nstack_reserved_bytes ", NULL, "\n"};
    for (unsigned i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *s = lines[i] ? lines[i]
                                 : fmt_u32((uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_bottom), 0);
        (void)sh_write(h, s, (uint32_t)strlen(s));
    }
    (void)sh_close(h);
}

static void finish(int code) __attribute__((noreturn));
static void finish(int code)
{
    write_stats();
    if (code == HYDRA_EXIT_OK && hydra_stack_overflowed()) {
        say("fw: stack overflow: the guard words at the bottom of the stack were overwritten\n");
        code = HYDRA_EXIT_STACK_OVERFLOW;
    }
    sh_exit(code);
}

static void fail(int code, const char *what, const char *name) __attribute__((noreturn));
static void fail(int code, const char *what, const char *name)
{
    say("fw: ");
    say(what);
    if (name != NULL) {
        say(" '");
        say(name);
        say("'");
    }
    say("\n");
    finish(code);
}

static const char *const fault_names[] = {"HardFault", "MemManage fault", "BusFault", "UsageFault",
                                          "unexpected exception"};

void hydra_fault(int code, const uint32_t *frame)
{
    const uint32_t cfsr = SCB_CFSR;
    say("fw: ");
    say(fault_names[code - HYDRA_EXIT_HARDFAULT]);
    if (frame != NULL) {
        say(" at pc ");
        say(fmt_u32(frame[6], 1));
    }
    say(", CFSR ");
    say(fmt_u32(cfsr, 1));
    say(", HFSR ");
    say(fmt_u32(SCB_HFSR, 1));
    if (cfsr & (1u << 15)) { /* BFARVALID */
        say(", BFAR ");
        say(fmt_u32(SCB_BFAR, 1));
    }
    if (cfsr & (1u << 7)) { /* MMARVALID */
        say(", MMFAR ");
        say(fmt_u32(SCB_MMFAR, 1));
    }
    say("\n");
    sh_exit(code); /* no stats: the stack may be what failed */
}

/* Splits cmdline in place into at most MAX_ARGS words; returns their number. */
static int split_args(char *s, const char *argv[MAX_ARGS])
{
    int argc = 0;
    while (*s != '\0' && argc < MAX_ARGS) {
        while (*s == ' ') {
            *s++ = '\0';
        }
        if (*s == '\0') {
            break;
        }
        argv[argc++] = s;
        while (*s != '\0' && *s != ' ') {
            s++;
        }
    }
    return argc;
}

int main(void)
{
    const char *argv[MAX_ARGS] = {"fw", "in.bin", "out.bin", "stats.txt"};
    int32_t in_h, out_h, size;
    uint32_t n, i;

    hydra_stack_paint();
#ifdef HYDRA_PLANT_HANG
    for (;;) {
        __asm__ volatile("" ::: "memory");
    }
#endif
#ifdef HYDRA_PLANT_FAULT
    (void)*(volatile uint32_t *)HYDRA_PLANT_FAULT_ADDR;
#endif
    if (sh_get_cmdline(cmdline, sizeof cmdline) == 0) {
        const char *words[MAX_ARGS];
        int argc = split_args(cmdline, words);
        for (int k = 1; k < argc; k++) { /* words[0] is the program name */
            argv[k] = words[k];
        }
    }
    stats_name = argv[3];

    in_h = sh_open(argv[1], SH_MODE_RB);
    if (in_h < 0) {
        fail(HYDRA_EXIT_IO, "cannot open input file", argv[1]);
    }
    size = sh_flen(in_h);
    if (size < 0) {
        fail(HYDRA_EXIT_IO, "cannot get the size of input file", argv[1]);
    }
    if ((uint32_t)size % HYDRA_MODEL_INPUT_BYTES != 0) {
        fail(HYDRA_EXIT_BAD_SIZE, "input size is not a multiple of the model's input; file", argv[1]);
    }
    n = (uint32_t)size / HYDRA_MODEL_INPUT_BYTES;
    out_h = sh_open(argv[2], SH_MODE_WB);
    if (out_h < 0) {
        fail(HYDRA_EXIT_IO, "cannot open output file", argv[2]);
    }
    for (i = 0; i < n; i++) {
        int status;
        if (sh_read(in_h, input, HYDRA_MODEL_INPUT_BYTES) != 0) {
            fail(HYDRA_EXIT_IO, "short read from input file", argv[1]);
        }
        status = hydra_model_run(input, output);
        if (status != 0) {
            say("fw: the model failed on input ");
            say(fmt_u32(i, 0));
            say(" with kernel status ");
            say(fmt_u32((uint32_t)status, 0));
            say("\n");
            finish(HYDRA_EXIT_KERNEL + status);
        }
        if (sh_write(out_h, output, HYDRA_MODEL_OUTPUT_BYTES) != 0) {
            fail(HYDRA_EXIT_IO, "cannot write output file", argv[2]);
        }
    }
    (void)sh_close(in_h);
    if (sh_close(out_h) != 0) {
        fail(HYDRA_EXIT_IO, "cannot close output file", argv[2]);
    }
    finish(HYDRA_EXIT_OK);
}
