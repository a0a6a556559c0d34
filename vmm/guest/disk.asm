# disk.asm - the virtio block guest.
#
# Drives a virtio-mmio version 2 ("modern", VIRTIO_F_VERSION_1) block device at
# 0xD0000000 + slot * 0x1000 with one split virtqueue, polled (no interrupts;
# the interrupt status register is acknowledged after each request).
#
# Initialisation (virtio 1.x, 3.1.1): check MagicValue "virt", Version 2 and
# DeviceID 2 (block); reset (Status = 0); ACKNOWLEDGE; DRIVER; read the 64
# device feature bits and accept only VIRTIO_F_VERSION_1 (bit 32, required)
# and VIRTIO_BLK_F_RO (bit 5) if offered; FEATURES_OK and check that it
# stuck; set up queue 0 with 8 entries (4 if the device allows fewer; at least
# 4 are needed); DRIVER_OK. Then read the capacity (512-byte sectors) from the
# configuration space.
#
# Requests are the virtio 1.x block layout, three descriptors chained: header
# {u32 type (0 IN, 1 OUT), u32 reserved, u64 sector} (device-readable), data
# (up to 8 sectors, device-writable for IN), u8 status (device-writable).
# Every request waits for the device to return it (up to 5 s of TSC).
#
# Sector s holds 64 words: word i = s * 0x9E3779B97F4A7C15
#                                   + seed * 0xC2B2AE3D27D4EB4F + i.
#
# Protocol (COM1), by mode=:
#   write (default): write sectors= sectors from start=, read them back and
#     verify: "disk ok sectors=<n>\n"; then every pace_ms verify again:
#     "disk ok pass <k>\n" (with passes=P, exit 0 after pass P), so data
#     surviving a live migration is visible.
#   verify: only read back and verify data written earlier with the same
#     seed: "disk ok sectors=<n>\n", then exit 0.
#   rotest: write the one sector start= and print "disk write status=<s>\n"
#     with the virtio status byte (1 = IOERR is expected on a read-only disk;
#     256 means the device never answered), then exit 0.
# Failures print one line and exit with status 1:
#   "disk not found\n"                  no virtio block device in that slot
#   "disk init failed\n"                no VERSION_1, FEATURES_OK refused, or
#                                       queue 0 unusable
#   "disk bad mode\n"                   unknown mode=
#   "disk BAD range capacity=<c>\n"     start + sectors beyond the capacity
#   "disk BAD sector <n> status=<s>\n"  a request failed (status 256: timeout)
#   "disk BAD sector <n>\n"             data read back differs from the pattern
#
# Command line: slot= (0), mmio= (0xD0000000 + slot * 0x1000: the device's
# address, for testing under other machines such as QEMU microvm), sectors= (64), start= (0), seed= (1),
# mode= (write|verify|rotest), pace_ms= (500), passes= (0 = forever),
# tsc_khz= (read by common.inc).

	.include "common.inc"

	.set MMIO_BASE,      0xD0000000
	.set MMIO_STRIDE,    0x1000
	# virtio-mmio registers.
	.set R_MAGIC,        0x000
	.set R_VERSION,      0x004
	.set R_DEVICE_ID,    0x008
	.set R_DEV_FEAT,     0x010
	.set R_DEV_FEAT_SEL, 0x014
	.set R_DRV_FEAT,     0x020
	.set R_DRV_FEAT_SEL, 0x024
	.set R_QUEUE_SEL,    0x030
	.set R_QUEUE_NUM_MAX, 0x034
	.set R_QUEUE_NUM,    0x038
	.set R_QUEUE_READY,  0x044
	.set R_QUEUE_NOTIFY, 0x050
	.set R_INT_STATUS,   0x060
	.set R_INT_ACK,      0x064
	.set R_STATUS,       0x070
	.set R_QUEUE_DESC,   0x080         # low; high at +4
	.set R_QUEUE_DRIVER, 0x090
	.set R_QUEUE_DEVICE, 0x0a0
	.set R_CONFIG_GEN,   0x0fc
	.set R_CONFIG,       0x100         # virtio_blk_config: u64 capacity first
	.set VIRT_MAGIC,     0x74726976    # "virt"
	.set BLK_DEVICE_ID,  2
	# Device status bits.
	.set S_ACKNOWLEDGE,  1
	.set S_DRIVER,       2
	.set S_DRIVER_OK,    4
	.set S_FEATURES_OK,  8
	# Features.
	.set F_BLK_RO,       1 << 5        # in feature word 0
	.set F_VERSION_1,    1 << 0        # bit 32: in feature word 1
	# Descriptor flags.
	.set D_NEXT,         1
	.set D_WRITE,        2
	.set T_IN,           0
	.set T_OUT,          1
	.set QSIZE,          8             # entries we allocate
	.set CHUNK,          8             # sectors per request (4 KiB buffer)
	.set TIMEOUT_MS,     5000
	.set STATUS_TIMEOUT, 256
	.set PAT_SECTOR,     0x9E3779B97F4A7C15
	.set PAT_SEED,       0xC2B2AE3D27D4EB4F

	.section .rodata
key_slot:    .asciz "slot="
key_mmio:    .asciz "mmio="
key_sectors: .asciz "sectors="
key_start:   .asciz "start="
key_seed:    .asciz "seed="
key_mode:    .asciz "mode="
key_pace:    .asciz "pace_ms="
key_passes:  .asciz "passes="
w_write:     .asciz "write"
w_verify:    .asciz "verify"
w_rotest:    .asciz "rotest"
msg_notfound: .asciz "disk not found\n"
msg_initfail: .asciz "disk init failed\n"
msg_badmode: .asciz "disk bad mode\n"
msg_range:   .asciz "disk BAD range capacity="
msg_badsec:  .asciz "disk BAD sector "
msg_status:  .asciz " status="
msg_oksec:   .asciz "disk ok sectors="
msg_okpass:  .asciz "disk ok pass "
msg_wstatus: .asciz "disk write status="

	.data
	.balign 8
dev:         .quad 0                   # MMIO base of our device
seed:        .quad 0
start:       .quad 0
nsectors:    .quad 0
qmask:       .quad 0                   # queue size - 1 (a power of two)
pass_count:  .quad 0                   # re-verify passes done; survives migration
last_used:   .word 0                   # used.idx we have consumed up to

	.bss
	.balign 4096
vq_desc:     .skip 16 * QSIZE          # descriptor table (16-byte aligned)
	.balign 64
vq_avail:    .skip 6 + 2 * QSIZE       # flags, idx, ring[], used_event (2-aligned)
	.balign 64
vq_used:     .skip 6 + 8 * QSIZE       # flags, idx, ring[]{id,len}, avail_event (4-aligned)
	.balign 64
vq_end:
req_hdr:     .skip 16
req_status:  .skip 1
	.balign 4096
dbuf:        .skip 512 * CHUNK

	.text
main:
	push %rbx
	push %r12
	push %r13
	push %r14
	push %r15

	lea key_slot(%rip), %rdi
	xor %esi, %esi
	call arg_num
	cmp $7, %rax                       # slots 0..7 (ABI.md)
	ja not_found
	shl $12, %rax
	mov $MMIO_BASE, %esi
	add %rax, %rsi
	lea key_mmio(%rip), %rdi           # mmio= overrides the address (a test aid)
	call arg_num
	mov %rax, dev(%rip)
	mov %rax, %r12                     # r12 = device registers throughout

	lea key_seed(%rip), %rdi
	mov $1, %esi
	call arg_num
	mov %rax, seed(%rip)
	lea key_start(%rip), %rdi
	xor %esi, %esi
	call arg_num
	mov %rax, start(%rip)
	lea key_sectors(%rip), %rdi
	mov $64, %esi
	call arg_num
	mov %rax, nsectors(%rip)

	# Identify the device.
	cmpl $VIRT_MAGIC, R_MAGIC(%r12)
	jne not_found
	cmpl $2, R_VERSION(%r12)           # 1 would be a legacy device
	jne init_failed
	cmpl $BLK_DEVICE_ID, R_DEVICE_ID(%r12)
	jne not_found

	# Reset, then ACKNOWLEDGE and DRIVER.
	movl $0, R_STATUS(%r12)
1:	cmpl $0, R_STATUS(%r12)            # reset is done when status reads 0
	je 2f
	pause
	jmp 1b
2:	movl $S_ACKNOWLEDGE, R_STATUS(%r12)
	movl $(S_ACKNOWLEDGE | S_DRIVER), R_STATUS(%r12)

	# Features: word 1 must offer VERSION_1; accept RO from word 0 if offered.
	movl $1, R_DEV_FEAT_SEL(%r12)
	mov R_DEV_FEAT(%r12), %eax
	test $F_VERSION_1, %eax
	jz init_failed
	movl $0, R_DEV_FEAT_SEL(%r12)
	mov R_DEV_FEAT(%r12), %eax
	and $F_BLK_RO, %eax
	movl $0, R_DRV_FEAT_SEL(%r12)
	mov %eax, R_DRV_FEAT(%r12)
	movl $1, R_DRV_FEAT_SEL(%r12)
	movl $F_VERSION_1, R_DRV_FEAT(%r12)
	movl $(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK), R_STATUS(%r12)
	testl $S_FEATURES_OK, R_STATUS(%r12)
	jz init_failed                     # the device refused our subset

	# Queue 0: clear our rings, pick the size, give the device the addresses.
	lea vq_desc(%rip), %rdi
	lea vq_end(%rip), %rcx
	sub %rdi, %rcx
	xor %eax, %eax
	rep stosb
	movl $0, R_QUEUE_SEL(%r12)
	cmpl $0, R_QUEUE_READY(%r12)
	jne init_failed
	mov R_QUEUE_NUM_MAX(%r12), %eax
	mov $QSIZE, %ecx
	cmp $QSIZE, %eax
	jae 3f
	mov $4, %ecx                       # a smaller device: 4 entries, we use 3
	cmp $4, %eax
	jb init_failed
3:	mov %ecx, R_QUEUE_NUM(%r12)
	dec %ecx
	mov %rcx, qmask(%rip)
	lea vq_desc(%rip), %rax
	mov %eax, R_QUEUE_DESC(%r12)
	shr $32, %rax
	mov %eax, R_QUEUE_DESC + 4(%r12)
	lea vq_avail(%rip), %rax
	mov %eax, R_QUEUE_DRIVER(%r12)
	shr $32, %rax
	mov %eax, R_QUEUE_DRIVER + 4(%r12)
	lea vq_used(%rip), %rax
	mov %eax, R_QUEUE_DEVICE(%r12)
	shr $32, %rax
	mov %eax, R_QUEUE_DEVICE + 4(%r12)
	movl $1, R_QUEUE_READY(%r12)
	movw $0, last_used(%rip)
	movl $(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK), R_STATUS(%r12)

	# Capacity, read as two 32-bit halves under the config generation.
4:	mov R_CONFIG_GEN(%r12), %ecx
	mov R_CONFIG(%r12), %eax
	mov R_CONFIG + 4(%r12), %r13d
	cmp R_CONFIG_GEN(%r12), %ecx
	jne 4b
	shl $32, %r13
	or %rax, %r13                      # r13 = capacity in sectors

	# Dispatch on mode=.
	lea key_mode(%rip), %rdi
	lea w_rotest(%rip), %rsi
	call arg_eq
	test %eax, %eax
	jnz mode_rotest
	lea key_mode(%rip), %rdi
	lea w_verify(%rip), %rsi
	call arg_eq
	mov %eax, %r15d                    # r15 = 1 for verify-only
	test %eax, %eax
	jnz 5f
	lea key_mode(%rip), %rdi
	call arg_has
	test %eax, %eax
	jz 5f                              # no mode=: write
	lea key_mode(%rip), %rdi
	lea w_write(%rip), %rsi
	call arg_eq
	test %eax, %eax
	jz bad_mode

5:	# The range must fit: start + sectors <= capacity (without overflow).
	mov start(%rip), %rax
	add nsectors(%rip), %rax
	jc bad_range
	cmp %r13, %rax
	ja bad_range

	test %r15d, %r15d
	jnz 6f
	call write_all
6:	call verify_all
	lea msg_oksec(%rip), %rdi
	call puts
	mov nsectors(%rip), %rdi
	call put_dec
	call nl
	test %r15d, %r15d
	jnz done                           # verify: one pass, exit 0

	# write mode: re-verify every pace_ms.
	lea key_pace(%rip), %rdi
	mov $500, %esi
	call arg_num
	mov %rax, %rdi
	call ms_to_tsc
	mov %rax, %r14                     # r14 = period
	lea key_passes(%rip), %rdi
	xor %esi, %esi
	call arg_num
	mov %rax, %r15                     # r15 = passes limit
	call tsc_now
	lea (%rax,%r14), %rbx              # rbx = next deadline
pass_loop:
	mov %rbx, %rdi
	call sleep_until
	add %r14, %rbx
	call tsc_now
	cmp %rax, %rbx
	ja 7f
	lea (%rax,%r14), %rbx              # a period late: resynchronise
7:	call verify_all
	incq pass_count(%rip)
	lea msg_okpass(%rip), %rdi
	call puts
	mov pass_count(%rip), %rdi
	call put_dec
	call nl
	test %r15, %r15
	jz pass_loop
	cmp %r15, pass_count(%rip)
	jb pass_loop
done:
	xor %eax, %eax
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %rbx
	ret

mode_rotest:
	mov start(%rip), %rdi
	mov $1, %esi
	call fill_buf
	mov $T_OUT, %edi
	mov start(%rip), %rsi
	mov $1, %edx
	call blk_request
	push %rax
	lea msg_wstatus(%rip), %rdi
	call puts
	pop %rdi
	call put_dec
	call nl
	jmp done

not_found:
	lea msg_notfound(%rip), %rdi
	jmp die
init_failed:
	lea msg_initfail(%rip), %rdi
	jmp die
bad_mode:
	lea msg_badmode(%rip), %rdi
	jmp die
bad_range:
	lea msg_range(%rip), %rdi
	call puts
	mov %r13, %rdi
	call put_dec
	call nl
	mov $1, %edi
	jmp exit

# write_all: write the pattern to sectors [start, start + nsectors), CHUNK
# sectors per request. Exits via io_error on a failed request.
write_all:
	push %rbx
	push %rbp
	mov start(%rip), %rbx              # rbx = next sector
	mov nsectors(%rip), %rbp           # rbp = sectors left
1:	test %rbp, %rbp
	jz 9f
	mov $CHUNK, %esi
	cmp %rsi, %rbp
	cmovb %rbp, %rsi                   # rsi = this request's sector count
	push %rsi
	mov %rbx, %rdi
	call fill_buf
	mov (%rsp), %rdx
	mov $T_OUT, %edi
	mov %rbx, %rsi
	call blk_request
	test %eax, %eax
	jnz io_error
	pop %rsi
	add %rsi, %rbx
	sub %rsi, %rbp
	jmp 1b
9:	pop %rbp
	pop %rbx
	ret

# verify_all: read sectors [start, start + nsectors) back and compare with the
# pattern. Exits via io_error or data_error.
verify_all:
	push %rbx
	push %rbp
	mov start(%rip), %rbx
	mov nsectors(%rip), %rbp
1:	test %rbp, %rbp
	jz 9f
	mov $CHUNK, %edx
	cmp %rdx, %rbp
	cmovb %rbp, %rdx
	push %rdx
	movq $0, dbuf(%rip)                # no stale match from the previous chunk
	mov $T_IN, %edi
	mov %rbx, %rsi
	call blk_request
	test %eax, %eax
	jnz io_error
	mov %rbx, %rdi
	mov (%rsp), %rsi
	call check_buf
	test %rax, %rax
	jns data_error                     # rax = the first bad sector
	pop %rdx
	add %rdx, %rbx
	sub %rdx, %rbp
	jmp 1b
9:	pop %rbp
	pop %rbx
	ret

# io_error(rbx = first sector of the failed request, eax = status): report
# and exit 1.
io_error:
	push %rax
	lea msg_badsec(%rip), %rdi
	call puts
	mov %rbx, %rdi
	call put_dec
	lea msg_status(%rip), %rdi
	call puts
	pop %rdi
	call put_dec
	call nl
	mov $1, %edi
	jmp exit

# data_error(rax = bad sector): report and exit 1.
data_error:
	push %rax
	lea msg_badsec(%rip), %rdi
	call puts
	pop %rdi
	call put_dec
	call nl
	mov $1, %edi
	jmp exit

# sector_key(rdi = sector): rax = the pattern value of the sector's word 0.
sector_key:
	mov $PAT_SECTOR, %rax
	imul %rdi, %rax
	mov $PAT_SEED, %rcx
	imul seed(%rip), %rcx
	add %rcx, %rax
	ret

# fill_buf(rdi = first sector, rsi = count): pattern of those sectors into dbuf.
fill_buf:
	lea dbuf(%rip), %r8
	mov %rdi, %r9
	mov %rsi, %r10
1:	test %r10, %r10
	jz 9f
	mov %r9, %rdi
	call sector_key
	xor %ecx, %ecx
2:	lea (%rax,%rcx), %rdx
	mov %rdx, (%r8,%rcx,8)
	inc %ecx
	cmp $64, %ecx
	jb 2b
	add $512, %r8
	inc %r9
	dec %r10
	jmp 1b
9:	ret

# check_buf(rdi = first sector, rsi = count): rax = the first sector in dbuf
# that differs from its pattern, or -1 if all match.
check_buf:
	lea dbuf(%rip), %r8
	mov %rdi, %r9
	mov %rsi, %r10
1:	test %r10, %r10
	jz 8f
	mov %r9, %rdi
	call sector_key
	xor %ecx, %ecx
2:	lea (%rax,%rcx), %rdx
	cmp %rdx, (%r8,%rcx,8)
	jne 7f
	inc %ecx
	cmp $64, %ecx
	jb 2b
	add $512, %r8
	inc %r9
	dec %r10
	jmp 1b
7:	mov %r9, %rax
	ret
8:	mov $-1, %rax
	ret

# blk_request(edi = type, rsi = sector, rdx = sector count): one request with
# the data in dbuf, waited for by polling the used ring. eax = the virtio
# status byte (0 OK, 1 IOERR, 2 UNSUPP) or STATUS_TIMEOUT.
blk_request:
	push %rbx
	mov dev(%rip), %r11
	# Header (device-readable) and a status the device must overwrite.
	mov %edi, req_hdr(%rip)
	movl $0, req_hdr + 4(%rip)
	mov %rsi, req_hdr + 8(%rip)
	movb $0xff, req_status(%rip)
	# Descriptor 0: header -> 1: data -> 2: status.
	lea vq_desc(%rip), %r8
	lea req_hdr(%rip), %rax
	mov %rax, 0(%r8)                   # addr
	movl $16, 8(%r8)                   # len
	movw $D_NEXT, 12(%r8)              # flags
	movw $1, 14(%r8)                   # next
	lea dbuf(%rip), %rax
	mov %rax, 16(%r8)
	shl $9, %edx
	mov %edx, 24(%r8)
	mov $D_NEXT, %eax
	cmp $T_IN, %edi
	jne 1f
	or $D_WRITE, %eax                  # a read: the device writes the data
1:	mov %ax, 28(%r8)
	movw $2, 30(%r8)
	lea req_status(%rip), %rax
	mov %rax, 32(%r8)
	movl $1, 40(%r8)
	movw $D_WRITE, 44(%r8)
	movw $0, 46(%r8)
	# Publish descriptor 0 in the available ring, then the new index.
	lea vq_avail(%rip), %r9
	movzwl 2(%r9), %eax                # avail.idx
	mov %eax, %ecx
	and qmask(%rip), %ecx
	movw $0, 4(%r9,%rcx,2)             # ring[idx % size] = head descriptor 0
	inc %eax
	mfence                             # ring entry before index (x86 keeps store order;
	mov %ax, 2(%r9)                    # the fence also orders against the notify)
	mfence
	movl $0, R_QUEUE_NOTIFY(%r11)      # queue 0 has work
	# Poll used.idx until the device hands the request back.
	mov $TIMEOUT_MS, %edi
	call ms_to_tsc
	mov %rax, %rbx
	call tsc_now
	add %rax, %rbx                     # rbx = give-up time
	lea vq_used(%rip), %r9
2:	movzwl 2(%r9), %eax
	cmp last_used(%rip), %ax
	jne 3f
	pause
	call tsc_now
	cmp %rbx, %rax
	jb 2b
	mov $STATUS_TIMEOUT, %eax
	pop %rbx
	ret
3:	incw last_used(%rip)
	mov dev(%rip), %r11
	mov R_INT_STATUS(%r11), %eax       # acknowledge any interrupt the device raised
	test %eax, %eax
	jz 4f
	mov %eax, R_INT_ACK(%r11)
4:	movzbl req_status(%rip), %eax
	pop %rbx
	ret
