# ---- boards/host/board.mk (also used by the jetson boards, with their CC and flags) ----
#   make              builds ./model
#   make SANITIZE=1   builds ./model-asan with AddressSanitizer and UBSan
#   make EXTRA_CPPFLAGS=-DHYDRA_PORTABLE_KERNELS   the plain C kernels (bench); objects follow the flags
OPT ?= -O2  # the model's Makefile says -O2 or -Os (hydra-edge compile --optimize); objects follow it
CFLAGS = -std=c99 $(OPT) -Wall -Wextra -Werror -pedantic
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

# Objects are rebuilt when the preprocessor flags change (a portable-kernels build, then a normal one).
ALL_CPPFLAGS = $(CPPFLAGS) $(EXTRA_CPPFLAGS)
FLAGS_STAMP = $(OBJDIR)/cppflags.txt
$(shell mkdir -p $(OBJDIR) && (echo '$(ALL_CPPFLAGS) $(OPT)' | cmp -s - $(FLAGS_STAMP) || echo '$(ALL_CPPFLAGS) $(OPT)' > $(FLAGS_STAMP)))

all: $(TARGET)

$(TARGET): $(OBJS)
	$(CC) $(CFLAGS) $(BOARD_CFLAGS) $(SANFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

$(OBJDIR)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(CFLAGS) $(BOARD_CFLAGS) $(SANFLAGS) -c -o $@ $<

$(OBJS): runtime/include/hydra_rt.h Makefile $(FLAGS_STAMP)
$(OBJDIR)/main.o $(OBJDIR)/model.o: model.h

clean:
	rm -rf obj obj-asan model model-asan

.PHONY: all clean
