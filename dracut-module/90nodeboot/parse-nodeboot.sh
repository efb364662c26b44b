#!/bin/sh
# Sourced by dracut-cmdline.sh, which stops the boot with "Don't know how to
# handle 'root=…'" unless a module claims the root= type. root=live: is
# nodectl-live.service's: claim it. This is the module's only hook.
case "${root:-}" in
    live:*)
        # shellcheck disable=SC2034 # read by dracut-cmdline.sh
        rootok=1
        ;;
esac
