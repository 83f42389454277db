# ---- boards/stm32f746/board.mk ----
#   make           builds fw-qemu.elf: the emulation image (QEMU mps2-an500, semihosting I/O)
#   make device    builds device.elf and device.bin: the real chip (flash 0x08000000, 216 MHz, USART1)
#   make EXTRA_CPPFLAGS=-DHYDRA_PLANT_FAULT   a harness that faults (tests); objects follow the flags
#   CC, BOARD_CFLAGS (-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-sp-d16), STACK_BYTES: from board.toml
OBJCOPY = arm-none-eabi-objcopy
OPT ?= -O2  # the model's Makefile says -O2 or -Os (hydra-edge compile --optimize); objects follow it
CFLAGS = -std=c99 $(OPT) -Wall -Wextra -Werror -pedantic -g -ffunction-sections -fdata-sections
LDFLAGS = -nostartfiles --specs=nano.specs -Wl,--gc-sections -L. -Wl,--defsym=__stack_size=$(STACK_BYTES)
LDLIBS = -lc -lgcc
STACK_BYTES ?= 4096
OBJDIR = obj

QEMU_SRCS = main_qemu.c startup_stm32f746.c $(MODEL_SRCS)
DEVICE_SRCS = main_device.c startup_stm32f746.c $(MODEL_SRCS)
QEMU_OBJS = $(QEMU_SRCS:%.c=$(OBJDIR)/%.o)
DEVICE_OBJS = $(DEVICE_SRCS:%.c=$(OBJDIR)/%.o)

# Objects are rebuilt when the preprocessor flags change (a planted-fault build, then a normal one).
ALL_CPPFLAGS = $(CPPFLAGS) $(EXTRA_CPPFLAGS)
FLAGS_STAMP = $(OBJDIR)/cppflags.txt
$(shell mkdir -p $(OBJDIR) && (echo '$(ALL_CPPFLAGS) $(OPT)' | cmp -s - $(FLAGS_STAMP) || echo '$(ALL_CPPFLAGS) $(OPT)' > $(FLAGS_STAMP)))

all: fw-qemu.elf

device: device.elf device.bin

fw-qemu.elf: $(QEMU_OBJS) mps2_an500.ld sections.ld
	$(CC) $(CFLAGS) $(BOARD_CFLAGS) $(LDFLAGS) -T mps2_an500.ld -Wl,-Map=fw-qemu.map -o $@ $(QEMU_OBJS) $(LDLIBS)

device.elf: $(DEVICE_OBJS) stm32f746.ld sections.ld
	$(CC) $(CFLAGS) $(BOARD_CFLAGS) $(LDFLAGS) -T stm32f746.ld -Wl,-Map=device.map -o $@ $(DEVICE_OBJS) $(LDLIBS)

device.bin: device.elf
	$(OBJCOPY) -O binary $< $@

$(OBJDIR)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(CFLAGS) $(BOARD_CFLAGS) -c -o $@ $<

$(QEMU_OBJS) $(DEVICE_OBJS): runtime/include/hydra_rt.h Makefile $(FLAGS_STAMP) hydra_board.h
$(OBJDIR)/main_qemu.o $(OBJDIR)/main_device.o $(OBJDIR)/model.o: model.h
$(OBJDIR)/main_qemu.o: semihost.h
$(OBJDIR)/main_device.o: test_vector.h

clean:
	rm -rf $(OBJDIR) fw-qemu.elf fw-qemu.map device.elf device.map device.bin

.PHONY: all device clean
