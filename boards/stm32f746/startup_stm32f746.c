/*
 * startup_stm32f746.c - reset, vector table, fault handlers and stack painting
 * for the STM32F746 (Cortex-M7), shared by the emulation image (QEMU
 * mps2-an500) and the device image. The linker script decides where things
 * go; nothing here depends on the memory map.
 *
 * Reset: enable the FPU (CPACR, before any floating-point instruction can
 * run), point VTOR at our table, enable the MemManage/BusFault/UsageFault
 * exceptions (so that they are told apart instead of escalating to
 * HardFault) and trap integer division by zero, copy .data from flash, zero
 * .bss, call main().
 */
#include <stdint.h>
#include <string.h>

#include "hydra_board.h"

int main(void);

extern uint32_t __data_start[], __data_end[], __data_load[], __bss_start[], __bss_end[];

/* The initial SP, then 15 system entries and the STM32F746's 98 interrupts (RM0385, table 40); none is
 * enabled. */
struct hydra_vectors {
    uint32_t *initial_sp;
    void (*handlers[15 + 98])(void);
};

#define STACK_PATTERN 0x5AA5F00Du
#define STACK_GUARD_WORDS 8u /* the lowest words of the stack: overwritten means overflowed */

void Reset_Handler(void) __attribute__((noreturn));
void Default_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);

void Reset_Handler(void)
{
    extern const struct hydra_vectors hydra_vector_table;

    SCB_CPACR |= (0xFu << 20); /* CP10, CP11: full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    SCB_VTOR = (uint32_t)(uintptr_t)&hydra_vector_table;
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18); /* MEMFAULTENA, BUSFAULTENA, USGFAULTENA */
    SCB_CCR |= (1u << 4);                              /* DIV_0_TRP */
    __asm__ volatile("dsb\n\tisb" ::: "memory");

    memcpy(__data_start, __data_load, (size_t)((uintptr_t)__data_end - (uintptr_t)__data_start));
    memset(__bss_start, 0, (size_t)((uintptr_t)__bss_end - (uintptr_t)__bss_start));
    (void)main();
    for (;;) {
        __asm__ volatile("wfi");
    }
}

/* The fault handlers find the stacked frame (MSP or PSP, from EXC_RETURN bit 2) and hand it on. */
#define HYDRA_FAULT_STUB(name, code)                                                                     \
    __attribute__((naked)) void name(void)                                                               \
    {                                                                                                    \
        __asm__ volatile("tst lr, #4\n\t"                                                                \
                         "ite eq\n\t"                                                                    \
                         "mrseq r1, msp\n\t"                                                             \
                         "mrsne r1, psp\n\t"                                                             \
                         "movs r0, %0\n\t"                                                               \
                         "b hydra_fault_entry\n" ::"i"(code));                                            \
    }

void hydra_fault_entry(int code, const uint32_t *frame) __attribute__((noreturn, used));
void hydra_fault_entry(int code, const uint32_t *frame)
{
    uintptr_t f = (uintptr_t)frame;
    /* A frame outside the stack (a stacking fault, a corrupted SP) is not worth reading. */
    if (f < (uintptr_t)__stack_bottom || f + 32u > (uintptr_t)__stack_top || (f & 3u) != 0) {
        frame = NULL;
    }
    hydra_fault(code, frame);
}

HYDRA_FAULT_STUB(HardFault_Handler, HYDRA_EXIT_HARDFAULT)
HYDRA_FAULT_STUB(MemManage_Handler, HYDRA_EXIT_MEMMANAGE)
HYDRA_FAULT_STUB(BusFault_Handler, HYDRA_EXIT_BUSFAULT)
HYDRA_FAULT_STUB(UsageFault_Handler, HYDRA_EXIT_USAGEFAULT)
HYDRA_FAULT_STUB(Default_Handler, HYDRA_EXIT_OTHER_EXCEPTION)

#define IRQ4 Default_Handler, Default_Handler, Default_Handler, Default_Handler
#define IRQ32 IRQ4, IRQ4, IRQ4, IRQ4, IRQ4, IRQ4, IRQ4, IRQ4

const struct hydra_vectors hydra_vector_table __attribute__((section(".isr_vector"), used)) = {
    __stack_top,
    {
        Reset_Handler,      /* 1 */
        Default_Handler,    /* 2 NMI */
        HardFault_Handler,  /* 3 */
        MemManage_Handler,  /* 4 */
        BusFault_Handler,   /* 5 */
        UsageFault_Handler, /* 6 */
        0, 0, 0, 0,         /* 7-10 reserved */
        Default_Handler,    /* 11 SVCall */
        Default_Handler,    /* 12 DebugMonitor */
        0,                  /* 13 reserved */
        Default_Handler,    /* 14 PendSV */
        Default_Handler,    /* 15 SysTick */
        IRQ32, IRQ32, IRQ32, Default_Handler, Default_Handler, /* 16-113: IRQ0-IRQ97 */
    },
};

/* ---- stack painting ---- */

static uintptr_t current_sp(void)
{
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

void hydra_stack_paint(void)
{
    /* Leave 64 bytes below the current SP for this function's own frame. */
    volatile uint32_t *p = __stack_bottom;
    volatile uint32_t *end = (volatile uint32_t *)((current_sp() - 64u) & ~(uintptr_t)3u);
    while (p < end) {
        *p++ = STACK_PATTERN;
    }
}

uint32_t hydra_stack_used(void)
{
    const volatile uint32_t *p = __stack_bottom;
    while (p < (const volatile uint32_t *)__stack_top && *p == STACK_PATTERN) {
        p++;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)p);
}

int hydra_stack_overflowed(void)
{
    const volatile uint32_t *p = __stack_bottom;
    uint32_t i;
    for (i = 0; i < STACK_GUARD_WORDS; i++) {
        if (p[i] != STACK_PATTERN) {
            return 1;
        }
    }
    return 0;
}
