/*
 * hydra_board.h - what the STM32F746 startup code and the two harnesses share.
 *
 * Exit codes of the emulation image (SYS_EXIT_EXTENDED, so they become
 * qemu-system-arm's exit status). 0, 2, 3, 4 and 10 + status mean what they
 * mean for the host harness; the rest are faults seen by the handlers in
 * startup_stm32f746.c. toolchain/hydra_edge/targets/runner.py reads them.
 */
#ifndef HYDRA_BOARD_H
#define HYDRA_BOARD_H

#include <stdint.h>

enum {
    HYDRA_EXIT_OK = 0,
    HYDRA_EXIT_USAGE = 2,          /* bad semihosting command line */
    HYDRA_EXIT_IO = 3,             /* a semihosting file could not be opened, read or written */
    HYDRA_EXIT_BAD_SIZE = 4,       /* input file size is not a multiple of the model's input */
    HYDRA_EXIT_KERNEL = 10,        /* + the hydra_status of the first kernel that failed */
    HYDRA_EXIT_HARDFAULT = 32,
    HYDRA_EXIT_MEMMANAGE = 33,
    HYDRA_EXIT_BUSFAULT = 34,
    HYDRA_EXIT_USAGEFAULT = 35,
    HYDRA_EXIT_OTHER_EXCEPTION = 36, /* NMI, SVC, PendSV, SysTick, an interrupt nobody enabled */
    HYDRA_EXIT_STACK_OVERFLOW = 37   /* the guard words at the bottom of the painted stack were overwritten */
};

/* Linker symbols (sections.ld). */
extern uint32_t __stack_bottom[], __stack_top[];

/* Called by every fault handler with the exit code above and the stacked exception frame
 * (r0 r1 r2 r3 r12 lr pc xpsr; NULL when it cannot be trusted). Each harness defines it. */
void hydra_fault(int code, const uint32_t *frame) __attribute__((noreturn));

/* Stack painting: fill the stack below the caller's frame with a pattern, and later find the lowest word
 * that no longer holds it. hydra_stack_used() returns the high-water mark in bytes from __stack_top;
 * hydra_stack_overflowed() is true when the guard words at the very bottom were overwritten. */
void hydra_stack_paint(void);
uint32_t hydra_stack_used(void);
int hydra_stack_overflowed(void);

/* System control block registers used by startup and the fault handlers (ARMv7-M ARM, B3.2). */
#define HYDRA_REG(addr) (*(volatile uint32_t *)(addr))
#define SCB_VTOR HYDRA_REG(0xE000ED08u)
#define SCB_CCR HYDRA_REG(0xE000ED14u)
#define SCB_SHCSR HYDRA_REG(0xE000ED24u)
#define SCB_CFSR HYDRA_REG(0xE000ED28u)
#define SCB_HFSR HYDRA_REG(0xE000ED2Cu)
#define SCB_MMFAR HYDRA_REG(0xE000ED34u)
#define SCB_BFAR HYDRA_REG(0xE000ED38u)
#define SCB_CPACR HYDRA_REG(0xE000ED88u)

#endif /* HYDRA_BOARD_H */
