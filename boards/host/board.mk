# ---- boards/host/board.mk (also used by the jetson boards, with their CC and flags) ----
#   make              builds ./model
#   make SANITIZE=1   builds ./model-asan with AddressSanitizer and UBSan
CFLAGS = -std=c99 -O2 -Wall -Wextra -Werror -pedantic
SRCS = main.c $(MODEL_SRCS)

ifeq ($(SANITIZE),1)
TARGET = model-asan
OBJDIR = obj-asan
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -g -fno-omit-frame-pointer
else
TARGET = model
OBJDIR = obj
SANFLAGS =
endif
OBJS = $(SRCS:%.c=$(OBJDIR)/%.o)

all: $(TARGET)

$(TARGET): $(OBJS)
	$(CC) $(CFLAGS) $(BOARD_CFLAGS) $(SANFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

$(OBJDIR)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(BOARD_CFLAGS) $(SANFLAGS) -c -o $@ $<

$(OBJS): runtime/include/hydra_rt.h Makefile
$(OBJDIR)/main.o $(OBJDIR)/model.o: model.h

clean:
	rm -rf obj obj-asan model model-asan

.PHONY: all clean
