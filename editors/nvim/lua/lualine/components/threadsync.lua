-- lualine component: put 'threadsync' in a lualine section, e.g.
--   require('lualine').setup({ sections = { lualine_x = { 'threadsync' } } })
-- The text comes from the plugin's cache (require('threadsync').statusline());
-- it never talks to the sidecar. The plugin refreshes lualine on each status.
local component = require('lualine.component'):extend()

function component:update_status()
  return require('threadsync').statusline()
end

return component
