-- Defines :ThreadSync. Loads nothing else until the command is used.
if vim.g.loaded_threadsync then
  return
end
vim.g.loaded_threadsync = true

local subcommands = { 'sync', 'resolve', 'status', 'threads', 'log', 'restart' }

vim.api.nvim_create_user_command('ThreadSync', function(info)
  require('threadsync.commands').run(info.fargs)
end, {
  nargs = '*',
  desc = 'threadsync: sync | resolve | status | threads | log | restart',
  complete = function(arglead, cmdline)
    -- Only the first argument is completed.
    local before = cmdline:match('^%s*%S+%s+(.*)$') or ''
    if before:find('%s') then
      return {}
    end
    return vim.tbl_filter(function(s)
      return vim.startswith(s, arglead)
    end, subcommands)
  end,
})
