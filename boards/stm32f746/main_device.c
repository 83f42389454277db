/*
 * main_device.c - device harness for the STM32F746 (STM32F746G-DISCO):
 * 216 MHz from the 25 MHz HSE, the model run once on a built-in test vector
 * (test_vector.h: one of the build's test inputs and the reference
 * interpreter's output for it), the result printed over USART1 (the ST-LINK
 * virtual COM port: PA9 TX, PB7 RX, 115200 8N1) and on ITM stimulus port 0
 * when a debugger has enabled it. Register addresses from RM0385.
 *
 * Prints: the output bytes, "PASS bit-exact" or "FAIL n bytes differ",
 * the cycles of one inference (DWT CYCCNT) and the stack high-water mark.
 */
#include <stdint.h>
#include <string.h>

#include "hydra_board.h"
#include "model.h"
#include "test_vector.h"

#define REG HYDRA_REG

/* RCC (RM0385 5.3) */
#define RCC_BASE 0x40023800u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x04u)
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_APB1ENR REG(RCC_BASE + 0x40u)
#define RCC_APB2ENR REG(RCC_BASE + 0x44u)
#define RCC_DCKCFGR2 REG(RCC_BASE + 0x90u)
/* PWR (RM0385 4.4) */
#define PWR_CR1 REG(0x40007000u)
#define PWR_CSR1 REG(0x40007004u)
/* FLASH (RM0385 3.7) */
#define FLASH_ACR REG(0x40023C00u)
/* GPIOA (RM0385 6.4) */
#define GPIOA_MODER REG(0x40020000u)
#define GPIOA_OSPEEDR REG(0x40020008u)
#define GPIOA_AFRH REG(0x40020024u)
/* USART1 (RM0385 31.8) */
#define USART1_CR1 REG(0x40011000u)
#define USART1_BRR REG(0x4001100Cu)
#define USART1_ISR REG(0x4001101Cu)
#define USART1_TDR REG(0x40011028u)
/* Cortex-M7 debug and cache (ARMv7-M ARM C1, Cortex-M7 TRM) */
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)
#define ITM_PORT0_8 (*(volatile uint8_t *)0xE0000000u)
#define ITM_PORT0 REG(0xE0000000u)
#define ITM_TER REG(0xE0000E00u)
#define ITM_TCR REG(0xE0000E80u)
#define SCB_CCSIDR REG(0xE000ED80u)
#define SCB_CSSELR REG(0xE000ED84u)
#define SCB_ICIALLU REG(0xE000EF50u)
#define SCB_DCISW REG(0xE000EF60u)

#define HSE_HZ 25000000u
#define BAUD 115200u
#define WAIT_LIMIT 1000000u

static uint32_t sysclk_hz = 16000000u; /* HSI until the PLL runs */
static int8_t output[HYDRA_MODEL_OUTPUT_BYTES] __attribute__((aligned(8)));

static inline void barrier(void)
{
    __asm__ volatile("dsb\n\tisb" ::: "memory");
}

static int wait_set(volatile uint32_t *reg, uint32_t mask)
{
    for (uint32_t i = 0; i < WAIT_LIMIT; i++) {
        if ((*reg & mask) == mask) {
            return 1;
        }
    }
    return 0;
}

/* HSE 25 MHz -> PLL (M 25, N 432, P 2, Q 9) -> SYSCLK 216 MHz; over-drive on, 7 flash wait states, ART on;
 * AHB 216 MHz, APB1 54 MHz (/4), APB2 108 MHz (/2). Stays on HSI 16 MHz when the HSE does not start. */
static int clock_216mhz(void)
{
    RCC_APB1ENR |= 1u << 28; /* PWREN */
    (void)RCC_APB1ENR;
    PWR_CR1 = (PWR_CR1 & ~(3u << 14)) | (3u << 14); /* VOS = scale 1 (takes effect when the PLL is on) */
    RCC_CR |= 1u << 16;                             /* HSEON */
    if (!wait_set(&RCC_CR, 1u << 17)) {             /* HSERDY */
        return 0;
    }
    RCC_CR &= ~(1u << 24); /* PLLON off while configuring */
    RCC_PLLCFGR = (25u << 0) | (432u << 6) | (0u << 16) /* P = 2 */ | (1u << 22) /* HSE */ | (9u << 24);
    RCC_CR |= 1u << 24;
    if (!wait_set(&RCC_CR, 1u << 25)) { /* PLLRDY */
        return 0;
    }
    PWR_CR1 |= 1u << 16; /* ODEN */
    if (!wait_set(&PWR_CSR1, 1u << 16)) {
        return 0;
    }
    PWR_CR1 |= 1u << 17; /* ODSWEN */
    if (!wait_set(&PWR_CSR1, 1u << 17)) {
        return 0;
    }
    /* 7 wait states at 216 MHz and 2.7-3.6 V (RM0385 table 5); ART reset, then ART and prefetch on. */
    FLASH_ACR = (FLASH_ACR & ~0xFu) | 7u;
    if ((FLASH_ACR & 0xFu) != 7u) {
        return 0;
    }
    FLASH_ACR |= 1u << 11;
    FLASH_ACR &= ~(1u << 11);
    FLASH_ACR |= (1u << 9) | (1u << 8);
    RCC_CFGR = (RCC_CFGR & ~((0xFu << 4) | (7u << 10) | (7u << 13))) | (0u << 4) | (5u << 10) | (4u << 13);
    RCC_CFGR = (RCC_CFGR & ~3u) | 2u; /* SW = PLL */
    if (!wait_set(&RCC_CFGR, 2u << 2)) { /* SWS = PLL */
        return 0;
    }
    sysclk_hz = 216000000u;
    return 1;
}

/* The Cortex-M7 L1 caches: invalidate, then enable (the CMSIS SCB_EnableICache/DCache sequences). */
static void caches_enable(void)
{
    barrier();
    SCB_ICIALLU = 0;
    barrier();
    SCB_CCR |= 1u << 17; /* IC */
    barrier();
    SCB_CSSELR = 0; /* level 1 data cache */
    barrier();
    const uint32_t ccsidr = SCB_CCSIDR;
    uint32_t sets = (ccsidr >> 13) & 0x7FFFu;
    do {
        uint32_t ways = (ccsidr >> 3) & 0x3FFu;
        do {
            SCB_DCISW = ((sets << 5) & 0x3FE0u) | ((ways << 30) & 0xC0000000u);
        } while (ways-- != 0);
    } while (sets-- != 0);
    barrier();
    SCB_CCR |= 1u << 16; /* DC */
    barrier();
}

static void uart_init(void)
{
    const uint32_t pclk2 = sysclk_hz == 216000000u ? sysclk_hz / 2u : sysclk_hz;
    RCC_AHB1ENR |= 1u << 0; /* GPIOAEN */
    RCC_APB2ENR |= 1u << 4; /* USART1EN */
    (void)RCC_APB2ENR;
    RCC_DCKCFGR2 &= ~3u; /* USART1 clocked from PCLK2 */
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18);     /* PA9: alternate function */
    GPIOA_OSPEEDR = (GPIOA_OSPEEDR & ~(3u << 18)) | (2u << 18); /* high speed */
    GPIOA_AFRH = (GPIOA_AFRH & ~(0xFu << 4)) | (7u << 4);       /* AF7 = USART1_TX */
    USART1_CR1 = 0;
    USART1_BRR = (pclk2 + BAUD / 2u) / BAUD; /* oversampling by 16 */
    USART1_CR1 = (1u << 3) | (1u << 0);      /* TE, UE */
}

static void put_char(char c)
{
    for (uint32_t i = 0; i < WAIT_LIMIT && !(USART1_ISR & (1u << 7)); i++) { /* TXE */
    }
    USART1_TDR = (uint32_t)(unsigned char)c;
    if ((ITM_TCR & 1u) && (ITM_TER & 1u)) {
        for (uint32_t i = 0; i < WAIT_LIMIT && ITM_PORT0 == 0; i++) {
        }
        ITM_PORT0_8 = (uint8_t)c;
    }
}

static void put(const char *s)
{
    while (*s != '\0') {
        if (*s == '\n') {
            put_char('\r');
        }
        put_char(*s++);
    }
}

static void put_uint(uint32_t u)
{
    char buf[11];
    char *p = buf + sizeof buf - 1;
    *p = '\0';
    do {
        *--p = (char)('0' + u % 10u);
        u /= 10u;
    } while (u != 0);
    put(p);
}

static void put_int(int32_t v)
{
    if (v < 0) {
        put("-");
        put_uint(0u - (uint32_t)v);
    } else {
        put_uint((uint32_t)v);
    }
}

static void put_hex(uint32_t v)
{
    char buf[11] = "0x00000000";
    for (int i = 9; i >= 2; i--, v >>= 4) {
        buf[i] = "0123456789abcdef"[v & 0xFu];
    }
    put(buf);
}

void hydra_fault(int code, const uint32_t *frame)
{
    static const char *const names[] = {"HardFault", "MemManage fault", "BusFault", "UsageFault",
                                        "unexpected exception"};
    put("hydra-edge: FAULT ");
    put(names[code - HYDRA_EXIT_HARDFAULT]);
    if (frame != NULL) {
        put(" at pc ");
        put_hex(frame[6]);
    }
    put(" CFSR ");
    put_hex(SCB_CFSR);
    put(" HFSR ");
    put_hex(SCB_HFSR);
    put(" BFAR ");
    put_hex(SCB_BFAR);
    put("\n");
    for (;;) {
        __asm__ volatile("bkpt 0"); /* stops here under a debugger */
    }
}

int main(void)
{
    int status, differ = 0;
    uint32_t cycles;

    hydra_stack_paint();
    const int pll = clock_216mhz();
    caches_enable();
    uart_init();
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;

    put("\nhydra-edge on STM32F746: ");
    put(pll ? "216 MHz (HSE + PLL, 7 wait states, ART)\n" : "HSE/PLL failed, running on HSI 16 MHz\n");
    const uint32_t t0 = DWT_CYCCNT;
    status = hydra_model_run(hydra_test_input, output);
    cycles = DWT_CYCCNT - t0;
    if (status != 0) {
        put("FAIL: kernel status ");
        put_int(status);
        put("\n");
    } else {
        put("output:");
        for (int i = 0; i < HYDRA_MODEL_OUTPUT_BYTES; i++) {
            put(" ");
            put_int(output[i]);
            differ += output[i] != hydra_test_expected[i];
        }
        put("\n");
        if (differ == 0) {
            put("PASS bit-exact with the reference interpreter\n");
        } else {
            put("FAIL: ");
            put_int(differ);
            put(" output bytes differ from the reference interpreter\n");
        }
    }
    put("cycles per inference: ");
    put_uint(cycles);
    put("\nstack high-water mark: ");
    put_uint(hydra_stack_used());
    put(" bytes\n");
    for (;;) {
        __asm__ volatile("wfi");
    }
}
