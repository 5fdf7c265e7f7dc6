/*
 * original_dst: the destination a connection had before the kernel's nat table redirected it to
 * this process (iptables REDIRECT/DNAT), which Node has no API for.
 *
 * IPv4 connections: getsockopt(fd, SOL_IP, SO_ORIGINAL_DST) fills a sockaddr_in.
 * IPv6 connections: getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST) fills a sockaddr_in6.
 * An IPv4 connection accepted on a dual-stack IPv6 socket (local address ::ffff:a.b.c.d) is an
 * IPv4 conntrack entry, so it is asked with the IPv4 option.
 *
 * One function, originalDst(fd) -> { address, port, family }, which throws an Error whose code
 * is the errno name (ENOENT: no conntrack entry for the connection; ENOTSOCK, EBADF...).
 * N-API only, so one build serves every Node version with N-API 8.
 */
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h; both 80. Their headers clash
 * with the libc ones, so the numbers are written here. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static const char *errno_name(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case EPERM: return "EPERM";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_errno(napi_env env, const char *call, int e) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", call, strerror(e));
  napi_throw_error(env, errno_name(e), message);
  return NULL;
}

static napi_value set_result(napi_env env, const char *address, unsigned port, int family) {
  napi_value result, v;
  if (napi_create_object(env, &result) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_named_property(env, result, "address", v) != napi_ok)
    return NULL;
  if (napi_create_uint32(env, port, &v) != napi_ok ||
      napi_set_named_property(env, result, "port", v) != napi_ok)
    return NULL;
  if (napi_create_int32(env, family, &v) != napi_ok ||
      napi_set_named_property(env, result, "family", v) != napi_ok)
    return NULL;
  return result;
}

static napi_value original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "originalDst(fd): fd must be a non-negative integer");
    return NULL;
  }

  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  memset(&local, 0, sizeof local);
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) return throw_errno(env, "getsockname", errno);

  int ipv6 = local.ss_family == AF_INET6 &&
             !IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr);
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6)
    return throw_errno(env, "getsockname", EAFNOSUPPORT);

  char text[INET6_ADDRSTRLEN];
  if (!ipv6) {
    struct sockaddr_in dst;
    socklen_t dlen = sizeof dst;
    memset(&dst, 0, sizeof dst);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &dlen) != 0)
      return throw_errno(env, "getsockopt(SOL_IP, SO_ORIGINAL_DST)", errno);
    if (inet_ntop(AF_INET, &dst.sin_addr, text, sizeof text) == NULL)
      return throw_errno(env, "inet_ntop", errno);
    return set_result(env, text, ntohs(dst.sin_port), 4);
  }
  struct sockaddr_in6 dst6;
  socklen_t dlen6 = sizeof dst6;
  memset(&dst6, 0, sizeof dst6);
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst6, &dlen6) != 0)
    return throw_errno(env, "getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)", errno);
  if (inet_ntop(AF_INET6, &dst6.sin6_addr, text, sizeof text) == NULL)
    return throw_errno(env, "inet_ntop", errno);
  return set_result(env, text, ntohs(dst6.sin6_port), 6);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  if (napi_create_function(env, "originalDst", NAPI_AUTO_LENGTH, original_dst, NULL, &fn) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "originalDst", fn) != napi_ok) return NULL;
  return exports;
}
