# Print, as JSON, the machines the Vagrantfile configures, read back from Vagrant itself.
#
#   ruby tests/vagrant/machine_plan.rb VAGRANTFILE_DIR LOCAL_DATA_DIR
#
# Loads the Vagrantfile with Vagrant's own loader (as `vagrant up` does, provider
# overrides merged) and reports, per machine and provider, what Vagrant would build:
# hostname, box, private network, memory/CPUs (VirtualBox keeps them as modifyvm
# customizations) and the provisioners. Tests compare this with `pikube inventory`.
# Needs no hypervisor: providers are looked up without checking they are usable.
require "json"
require "vagrant"

root, data_dir = ARGV
env = Vagrant::Environment.new(cwd: root, local_data_path: data_dir)
vagrantfile = env.vagrantfile

def provisioner(p)
  c = p.config
  base = { "name" => p.name&.to_s, "type" => p.type.to_s }
  case p.type.to_s
  when "ansible"
    base.merge(
      "playbook" => c.playbook, "inventory_path" => c.inventory_path, "limit" => c.limit,
      "force_remote_user" => c.force_remote_user, "host_key_checking" => c.host_key_checking,
      "compatibility_mode" => c.compatibility_mode, "extra_vars" => c.extra_vars,
    )
  when "file" then base.merge("source" => c.source, "destination" => c.destination)
  when "shell" then base.merge("path" => c.path, "args" => c.args, "privileged" => c.privileged)
  else base
  end
end

def modifyvm(customizations, flag)
  found = customizations.map(&:last).find { |cmd| cmd[0] == "modifyvm" && cmd[2] == flag }
  found && found[3].to_i
end

machines = vagrantfile.machine_names.map do |name|
  per_provider = %i[virtualbox libvirt].to_h do |provider|
    config = vagrantfile.machine_config(name, provider, nil, nil, false)[:config]
    config.finalize!
    networks = config.vm.networks.select { |type, _| type == :private_network }
    entry = {
      "hostname" => config.vm.hostname,
      "box" => config.vm.box,
      "private_networks" => networks.map { |_, o| { "ip" => o[:ip], "netmask" => o[:netmask] } },
      "synced_folders" => config.vm.synced_folders.transform_values { |o| o[:disabled] },
      "provisioners" => config.vm.provisioners.map { |p| provisioner(p) },
    }
    if provider == :virtualbox
      vb = config.vm.get_provider_config(:virtualbox)
      entry["memory_mb"] = modifyvm(vb.customizations, "--memory")
      entry["cpus"] = modifyvm(vb.customizations, "--cpus")
    end
    [provider.to_s, entry]
  end
  { "name" => name.to_s, "primary" => !!vagrantfile.machine_names_and_options[name][:primary],
    "providers" => per_provider }
end

arches = %w[x86_64 amd64 aarch64 arm64].to_h { |m| [m, PikubeVagrant.host_arch(m)] }
puts JSON.pretty_generate(
  "machines" => machines, "host_arch" => arches, "no_parallel" => ENV["VAGRANT_NO_PARALLEL"],
  "path" => ENV["PATH"].split(File::PATH_SEPARATOR),
)
